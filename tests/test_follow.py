"""Following a job (`nas watch`, `nas demo`): piped, a line per finished trial and nothing
in between; on a terminal, one live line with the elapsed time, trials done and best."""

import io

import pytest
from rich.console import Console

from api.cli import follow as follow_module
from api.cli.demo import evolution_line
from api.cli.follow import TrialFeed, follow, trial_line


def candidate(i, status="completed", parent=None, mutation="random sample", **metrics):
    return {
        "id": i + 1,
        "birth": i,
        "status": status,
        "is_baseline": i == 0,
        "parent_id": parent,
        "mutation": "initial" if i == 0 else mutation,
        "perplexity": metrics.get("perplexity", 10.0 + i),
        "step_time_ratio": metrics.get("ratio", 1.0),
        "reason": metrics.get("reason"),
        "reused_from_id": None,
    }


class FakeServer:
    """The job's states, one per poll: (job status, done, candidates by birth)."""

    def __init__(self, states):
        self.states = states
        self.poll = -1
        self.offsets = []

    def request(self, method, server, path, token, **kwargs):
        assert method == "GET"
        if path.endswith("/candidates"):
            params = kwargs["params"]
            self.offsets.append(params["offset"])
            items = self.states[self.poll][2][params["offset"] :][: params["limit"]]
            return {"items": items, "total": len(self.states[self.poll][2])}
        self.poll = min(self.poll + 1, len(self.states) - 1)
        status, done, items = self.states[self.poll]
        best = min((c["perplexity"] for c in items if c["status"] == "completed"), default=None)
        return {
            "id": 1,
            "status": status,
            "progress": {
                "done": done,
                "total": 4,
                "running": sum(c["status"] == "running" for c in items),
                "best_perplexity": best,
                "elapsed_s": 12.0 * (self.poll + 1),
                "eta_s": None,
            },
        }


STATES = [
    ("running", 0, [candidate(0, "running")]),
    ("running", 0, [candidate(0, "running")]),  # nothing new: nothing printed
    ("running", 1, [candidate(0), candidate(1, "running"), candidate(2, "running")]),
    (
        "running",
        2,
        [candidate(0), candidate(1, "running"), candidate(2, "pruned", 1, "layer 1 hidden")],
    ),
    (
        "completed",
        4,
        [
            candidate(0),
            candidate(1),
            candidate(2, "pruned", 1, "layer 1 hidden"),
            candidate(3, parent=1, mutation="d_model: 128 -> 160"),
        ],
    ),
]


@pytest.fixture
def server(monkeypatch):
    fake = FakeServer(STATES)
    monkeypatch.setattr(follow_module, "request", fake.request)
    monkeypatch.setattr(follow_module.time, "sleep", lambda s: None)
    return fake


def test_piped_prints_one_line_per_finished_trial(server, capsys):
    console = Console(file=io.StringIO(), force_terminal=False)
    job = follow("http://x", 1, None, interval=2.0, console=console)
    assert job["status"] == "completed"
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "trial 1/4: candidate 1 completed, perplexity 10.000, step 1.000x baseline; the baseline",
        "trial 2/4: candidate 3 pruned, perplexity 12.000, step 1.000x baseline; "
        "child of 1 (layer 1 hidden)",
        "trial 3/4: candidate 2 completed, perplexity 11.000, step 1.000x baseline; random sample",
        "trial 4/4: candidate 4 completed, perplexity 13.000, step 1.000x baseline; "
        "child of 1 (d_model: 128 -> 160)",
    ]
    assert console.file.getvalue() == ""  # no status line every poll
    # Each poll asks from the first birth not yet finished on, not for the whole history.
    assert server.offsets == [0, 0, 0, 1, 1]


def test_on_a_terminal_one_live_line_with_elapsed_done_and_best(server, capsys):
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=200)
    follow("http://x", 1, None, interval=0.0, console=console)
    text = output.getvalue()
    assert "4/4" in text and "1:00 elapsed" in text and "best perplexity 10.000" in text
    assert "trial 4/4: candidate 4 completed" in text  # finished trials above the live line
    assert capsys.readouterr().out == ""


def test_the_feed_skips_what_it_returned_and_pages_long_jobs(monkeypatch):
    items = [candidate(i) for i in range(2500)]

    def request(method, server, path, token, params):
        return {"items": items[params["offset"] :][: params["limit"]]}

    monkeypatch.setattr(follow_module, "request", request)
    feed = TrialFeed("http://x", 1, None)
    assert [c["birth"] for c in feed.new()] == list(range(2500))
    assert feed.new() == [] and feed.offset == 2500


def test_a_failed_trial_says_why_and_the_demo_counts_its_evolution():
    failed = candidate(3, "failed", reason="out of memory\ntraceback ...", perplexity=None)
    failed["perplexity"] = None
    assert trial_line(failed, 2, 5).startswith("trial 2/5: candidate 4 failed, step 1.000x")
    assert "out of memory" in trial_line(failed, 2, 5)
    line = evolution_line(STATES[-1][2])
    assert line.startswith("evolution: 2 of 4 trials were mutations of a tournament's winner")
    assert "1 initial baselines, 1 random samples" in line


def test_watch_counts_the_trials_finished_before_it_started(monkeypatch, capsys):
    fake = FakeServer(STATES[3:])
    monkeypatch.setattr(follow_module, "request", fake.request)
    monkeypatch.setattr(follow_module.time, "sleep", lambda s: None)
    follow("http://x", 1, None, console=Console(file=io.StringIO()), history=False)
    assert capsys.readouterr().out.splitlines() == [
        "2 trials had finished before this",
        "trial 3/4: candidate 2 completed, perplexity 11.000, step 1.000x baseline; random sample",
        "trial 4/4: candidate 4 completed, perplexity 13.000, step 1.000x baseline; "
        "child of 1 (d_model: 128 -> 160)",
    ]
