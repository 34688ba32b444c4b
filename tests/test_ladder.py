"""The fidelity ladder's decisions (pure): ranking, asynchronous promotion by a fraction or a
count, the random share, the baseline at every rung, budgets, seeds, confirmation's pick."""

import pytest

from nas_service import ladder
from nas_service.job_config import JobConfig
from nas_service.ladder import Score


def config(mode: str = "constrained", **fidelity) -> JobConfig:
    return JobConfig.model_validate(
        {
            "name": "ladder",
            "dataset": "builtin:stdlib",
            "objective": {"mode": mode, "baseline": "dense", "max_step_time_ratio": 1.5},
            "limits": {"max_trials": 21},  # 20 candidates at rung 0, the baseline apart
            "fidelity": {"rungs": [{"budget_multiplier": 4, "promote": 0.25}], **fidelity},
            "confirm": {"top_k": 2},
        }
    )


def scores(losses: list[float], ratio: float = 1.0) -> list[Score]:
    return [Score(i + 1, loss, 2.0**loss, ratio, True) for i, loss in enumerate(losses)]


def test_constrained_ranking_puts_feasible_first_then_lower_loss():
    slow = Score(9, 1.0, 2.7, 3.0, False)
    ranked = ladder.ranking([*scores([3.0, 2.0, 2.5]), slow], "constrained")
    assert [s.candidate_id for s in ranked] == [2, 3, 1, 9]


def test_pareto_ranking_is_by_front_then_perplexity():
    points = [
        Score(1, 0, 10.0, 1.0, True),  # front
        Score(2, 0, 12.0, 0.5, True),  # front
        Score(3, 0, 11.0, 1.2, True),  # dominated by 1
        Score(4, 0, 9.0, 2.0, True),  # front
    ]
    assert [s.candidate_id for s in ladder.ranking(points, "pareto")] == [4, 1, 2, 3]
    assert [s.candidate_id for s in ladder.front(points)] == [2, 1, 4]


def test_a_fraction_promotes_asynchronously_without_waiting_for_the_rung():
    job = config()
    # 4 results of an expected 20: the top quarter so far (1) goes up at once.
    first = ladder.promotions(job, 0, scores([3.0, 2.0, 2.5, 2.8]), {}, final=False)
    assert [(p.candidate_id, p.origin, p.rung) for p in first] == [(2, "rank", 1)]
    # 3 results: floor(0.75) = 0, nobody yet; the same call again promotes nothing twice.
    assert ladder.promotions(job, 0, scores([3.0, 2.0, 2.5]), {}, final=False) == []
    again = ladder.promotions(job, 0, scores([3.0, 2.0, 2.5, 2.8]), {2: "rank"}, final=False)
    assert again == []
    # 8 results: two may be up; one already is, so the best not yet promoted joins it.
    eight = scores([3.0, 2.0, 2.5, 2.8, 1.5, 2.9, 3.1, 3.2])
    later = ladder.promotions(job, 0, eight, {2: "rank"}, final=False)
    assert [p.candidate_id for p in later] == [5]


def test_a_count_is_a_share_of_the_expected_rung_until_it_is_complete():
    job = config(rungs=[{"budget_multiplier": 4, "promote": 4}])
    five = scores([3.0, 2.0, 2.5, 2.8, 2.9])
    # 5 of the expected 20 results: 4 x 5 / 20 = 1 so far.
    assert [p.candidate_id for p in ladder.promotions(job, 0, five, {}, final=False)] == [2]
    # The rung is complete with only these 5: exactly the count, best first.
    done = ladder.promotions(job, 0, five, {2: "rank"}, final=True)
    assert [p.candidate_id for p in done] == [3, 4, 5]
    assert ladder.expected_sizes(job) == [20, 4]


def test_a_final_fraction_promotes_at_least_one():
    job = config()
    assert [p.candidate_id for p in ladder.promotions(job, 0, scores([2.0, 1.0]), {}, True)] == [2]


def test_the_random_share_promotes_regardless_of_rank_and_draws_the_same_again():
    job = config(random_share=0.3)
    many = scores([float(i) for i in range(200)])
    chosen = ladder.promotions(job, 0, many, {}, final=False)
    rank = [p.candidate_id for p in chosen if p.origin == "rank"]
    drawn = [p.candidate_id for p in chosen if p.origin == "random"]
    assert rank == list(range(1, 51))  # the top quarter of 200
    assert 0.2 < len(drawn) / 150 < 0.4  # about 30% of the rest, from anywhere in the ranking
    assert max(drawn) > 150 and not set(drawn) & set(rank)
    assert ladder.promotions(job, 0, many, {}, final=False) == chosen  # restart-safe
    assert not [p for p in ladder.promotions(config(), 0, many, {}, False) if p.origin != "rank"]


def test_the_baseline_joins_a_rung_only_with_a_candidate():
    job = config()
    base = Score(100, 2.0, 7.0, 1.0, True, is_baseline=True)
    assert ladder.promotions(job, 0, [base, *scores([3.0, 2.5, 2.8])], {}, final=False) == []
    chosen = ladder.promotions(job, 0, [base, *scores([3.0, 2.5, 2.8, 2.2])], {}, final=False)
    assert {(p.candidate_id, p.origin) for p in chosen} == {(4, "rank"), (100, "baseline")}


def test_the_top_rung_promotes_nobody():
    assert ladder.promotions(config(), 1, scores([1.0, 2.0]), {}, final=True) == []


def test_budgets_seeds_and_confirmation_pick():
    job = config(rungs=[{"budget_multiplier": 4, "promote": 0.25, "seeds": 3}])
    assert ladder.scaled_budget({"seconds": 15.0}, 4) == {"seconds": 60.0}
    assert ladder.scaled_budget({"steps": 10}, 2.5) == {"steps": 25}
    assert ladder.rung_seeds(job, 0) == [0] and ladder.rung_seeds(job, 1) == [0, 1, 2]
    assert not set(ladder.confirm_seeds(job)) & {0, 1, 2}
    slow = Score(7, 0.5, 1.6, 2.0, False)
    picked = ladder.confirm_selection(job, [*scores([3.0, 2.0, 2.5]), slow])
    assert [s.candidate_id for s in picked] == [2, 3]  # top_k feasible; the slow one is out


def test_auto_margin_is_twice_the_relative_seed_noise():
    assert ladder.auto_margin([5.0, 5.1, 4.9]) == pytest.approx(2 * 0.1 / 5.0)
    assert ladder.auto_margin([5.0, 5.0]) == 0.005  # the floor
    assert ladder.auto_margin([5.0, None]) is None


def test_scores_from_runs_wait_for_every_seed_and_average_them():
    job = config()
    runs = [
        {"candidate_id": 1, "status": "completed", "val_loss": 2.0, "perplexity": 7.4,
         "step_time_ratio": 1.0},
        {"candidate_id": 1, "status": "completed", "val_loss": 3.0, "perplexity": 20.1,
         "step_time_ratio": 2.0},
        {"candidate_id": 2, "status": "completed", "val_loss": 2.0, "perplexity": 7.4,
         "step_time_ratio": 1.0},
        {"candidate_id": 2, "status": "running", "val_loss": None, "perplexity": None,
         "step_time_ratio": None},
        {"candidate_id": 3, "status": "failed", "val_loss": None, "perplexity": None,
         "step_time_ratio": None},
    ]  # fmt: skip
    (one,) = ladder.scores_from_runs(runs, job, baseline_id=None)
    assert one.candidate_id == 1 and one.val_loss == 2.5 and one.step_time_ratio == 1.5
    assert one.feasible  # 1.5 <= max_step_time_ratio


def test_rungs_must_grow_and_counts_be_whole():
    with pytest.raises(ValueError, match=r"rungs\.1\.budget_multiplier"):
        config(rungs=[{"budget_multiplier": 4, "promote": 0.5}, {"budget_multiplier": 2,
                                                                  "promote": 0.5}])  # fmt: skip
    with pytest.raises(ValueError, match="whole number"):
        config(rungs=[{"budget_multiplier": 4, "promote": 2.5}])
    with pytest.raises(ValueError, match="noise_seeds"):
        JobConfig.model_validate(
            {"name": "x", "dataset": "builtin:stdlib", "hurdle": {"margin": "auto"}}
        )
