import math

import numpy as np
import pytest
from scipy import stats

from metapose.experiment.report import format_table, summarize, verdicts
from metapose.experiment.results import RunResult, load_results, save_result
from metapose.experiment.statistics import mean_ci


def test_mean_ci_is_the_student_t_interval() -> None:
    x = [0.5, 0.55, 0.6, 0.52, 0.58]
    est = mean_ci(x)
    lo, hi = stats.t.interval(0.95, df=4, loc=np.mean(x), scale=stats.sem(x))
    assert est.mean == pytest.approx(np.mean(x)) and est.half_width == pytest.approx((hi - lo) / 2)
    assert math.isnan(mean_ci([0.3]).half_width) and mean_ci([0.3]).format() == "0.300"


def runs(model: str, aps: list[float], shots: int = 16) -> list[RunResult]:
    return [
        RunResult("thermal", model, shots, seed, {"ap": ap, "ar": ap + 0.1})
        for seed, ap in enumerate(aps)
    ]


def test_difference_is_paired_by_seed() -> None:
    # Large spread across seeds but a constant +0.02 per seed: the paired CI is tight.
    base = runs("supervised", [0.2, 0.5, 0.8])
    meta = runs("meta", [0.22, 0.52, 0.82])
    rows = summarize(base + meta)
    diff = next(r for r in rows if r.model == "meta - supervised")
    assert diff.metrics["ap"].mean == pytest.approx(0.02)
    assert diff.metrics["ap"].half_width == pytest.approx(0.0, abs=1e-9)
    assert verdicts(rows) == ["thermal K=16: AP meta - supervised 0.020 ± 0.000 -> meta wins"]


def test_meta_is_compared_with_every_other_arm() -> None:
    rows = summarize(
        runs("as-is", [0.5, 0.6, 0.7])
        + runs("supervised", [0.2, 0.5, 0.8])
        + runs("meta", [0.4, 0.5, 0.6])
    )
    assert [r.model for r in rows] == [
        "as-is",
        "supervised",
        "meta",
        "meta - as-is",
        "meta - supervised",
    ]
    assert "as-is wins" in verdicts(rows)[0]


def test_overlapping_results_are_a_tie_and_a_loss_is_a_loss() -> None:
    tie = summarize(runs("supervised", [0.2, 0.5, 0.8]) + runs("meta", [0.25, 0.45, 0.81]))
    assert "tie" in verdicts(tie)[0]
    loss = summarize(runs("supervised", [0.5, 0.6, 0.7]) + runs("meta", [0.4, 0.5, 0.6]))
    assert "supervised wins" in verdicts(loss)[0]


def test_table_has_the_paper_layout() -> None:
    rows = summarize(
        runs("as-is", [0.2, 0.3]) + runs("meta", [0.25, 0.35]) + runs("as-is", [0.1], shots=0)
    )
    table = format_table(rows).splitlines()
    assert table[0] == "| Dataset | Model | AP | AR |"
    assert table[2].startswith("| thermal (not adapted) | As-is | 0.100 |")
    assert any(line.startswith("| thermal K=16 | meta - as-is | +0.050 ± 0.000") for line in table)


def test_results_round_trip_through_files(tmp_path) -> None:  # noqa: ANN001
    r = RunResult(
        "unique", "meta", 4, 2, {"ap": 0.4}, epoch_losses=(1.0, 0.5), shot_image_ids=(3, 9)
    )
    save_result(tmp_path, r)
    assert load_results(tmp_path) == [r]


def test_headline_summarises_the_paired_differences_in_one_line(tmp_path) -> None:  # noqa: ANN001
    from metapose.experiment.report import headline, write_index_html

    rows = summarize(
        runs("as-is", [0.2, 0.5, 0.8], shots=4)
        + runs("meta", [0.25, 0.45, 0.81], shots=4)
        + runs("supervised", [0.2, 0.5, 0.8], shots=4)
        + runs("as-is", [0.2, 0.5, 0.8], shots=16)
        + runs("meta", [0.25, 0.45, 0.81], shots=16)
        + runs("supervised", [0.2, 0.5, 0.8], shots=16)
        + runs("supervised", [0.2, 0.5, 0.8], shots=32)
        + runs("meta", [0.22, 0.52, 0.82], shots=32)
        + runs("as-is", [0.25, 0.45, 0.8], shots=32)
        + runs("meta", [0.3], shots=0)
        + runs("as-is", [0.9], shots=0)
    )
    line = headline(rows)
    assert line == (
        "Meta-learned init (AP, seed-paired 95 % CI over 3 seeds): ties as-is at every K; "
        "ties supervised at K=4, 16, beats it at K=32."
    )
    two_targets = rows + [
        r.__class__("unique", r.shots, r.model, r.metrics) for r in rows if r.shots == 4
    ]
    assert "ties as-is at every K on every target" in headline(two_targets)  # type: ignore[operator]
    assert headline(summarize(runs("meta", [0.2, 0.3]))) is None
    page = write_index_html(
        tmp_path / "index.html",
        title="t",
        rows=rows,
        figures=[],
        notes=[],
        config_yaml="",
        provenance={},
    ).read_text()
    assert page.index(line) < page.index("<table>")


def test_twins_follow_their_arms_with_the_differences_that_ask_about_unlabelled_data() -> None:
    from metapose.experiment.report import headline

    results = (
        runs("supervised", [0.2, 0.5, 0.8])
        + runs("supervised+distill", [0.3, 0.6, 0.9])
        + runs("meta", [0.22, 0.52, 0.82])
        + runs("meta+distill", [0.2, 0.5, 0.8])
        + runs("meta", [0.4], shots=0)
        + runs("meta+distill", [0.5, 0.55, 0.6], shots=0)
    )
    rows = summarize(results)
    assert [r.model for r in rows if r.shots == 16] == [
        "supervised",
        "supervised+distill",
        "meta",
        "meta+distill",
        "meta - supervised",
        "meta+distill - supervised+distill",
        "meta+distill - meta",
        "supervised+distill - supervised",
    ]
    notes = verdicts(rows)
    assert "thermal K=16: AP meta+distill - supervised+distill -0.100 ± 0.000 -> " in notes[2]
    assert notes[2].endswith("supervised+distill wins")
    table = format_table(rows)
    assert "| thermal (not adapted) | Meta-learned | 0.400 |" in table
    assert "| thermal K=0 | Meta-learned + distillation | 0.550 ± " in table
    assert "| thermal K=0 | meta+distill - meta | +0.100 |" in table  # one seed paired
    # each minuend's clause names only its own differences
    line = headline(rows)
    assert line is not None
    meta_clause, twin_clause = line.split(". ")[:2]
    assert meta_clause.startswith("Meta-learned init") and "distill" not in meta_clause
    assert twin_clause.startswith("Meta-learned + distillation init")
    assert "loses to supervised+distill at every K; loses to meta" in twin_clause
