"""Search spaces shared by the tests."""

# proxy-cpu overrides small enough that a 1 s trial compiles and trains in a few seconds.
SMALL_SPACE = {
    "d_model": [64, 96],
    "attention_heads": [2],
    "ffn_hidden": [128, 256],
    "moe_hidden": [128, 256],
    "max_layers": 4,
    "capacity_factor": [1.0, 2.0],
}
