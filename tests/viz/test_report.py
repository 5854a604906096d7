from __future__ import annotations

import re
from pathlib import Path

from archsearch.viz import write_report


def test_report_tables_reasons_and_relative_figure_links(grid_dir: Path, tmp_path: Path):
    report, rendered = write_report(grid_dir, out=tmp_path / "r" / "report.md", plots_dir=tmp_path / "plots")
    text = report.read_text()
    assert rendered is not None and "ratio_map" in rendered.written
    assert text.startswith("# Study `ablation`")
    assert "- trials: 24 in all; 22 complete, 1 pruned, 1 failed" in text
    assert "| failed | CUDA out of memory at step 20 | #21 | 1 |" in text
    assert "| pruned | pruned at step 150: val_loss 2.91 above the median 2.62 | #12 | 1 |" in text
    rows = [l for l in text.splitlines() if re.match(r"\| \d+ \| #\d+ \|", l)]
    assert len(rows) == 10
    assert "attention=0.125" in rows[0] and "/trials/" in rows[0]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all(not Path(l).is_absolute() for l in links)
    assert all((report.parent / l).is_file() for l in links)
    assert "rope: RoPE comparison needs" in text  # figures that do not apply are named with the reason
    assert "archsearch export" in text and "--trial 7" in text


def test_report_reuses_existing_figures_and_can_leave_them_out(grid_dir: Path, tmp_path: Path):
    plots = tmp_path / "plots"
    write_report(grid_dir, out=tmp_path / "a.md", plots_dir=plots)
    stamp = (plots / "ribbons.png").stat().st_mtime_ns
    _, rendered = write_report(grid_dir, out=tmp_path / "b.md", plots_dir=plots)
    assert rendered is None and (plots / "ribbons.png").stat().st_mtime_ns == stamp
    assert "ribbons.png" in (tmp_path / "b.md").read_text()
    _, rendered = write_report(grid_dir, out=tmp_path / "c.md", figures=False)
    assert rendered is None and "## Figures" not in (tmp_path / "c.md").read_text()


def test_multi_objective_report_lists_the_front(placement_dir: Path, tmp_path: Path):
    report, _ = write_report(placement_dir, out=tmp_path / "p.md", figures=False)
    text = report.read_text()
    assert "objectives: val_loss (minimize), decode_ms_est (minimize)" in text
    assert "- Pareto front (val_loss vs decode_ms_est): #" in text
    assert "| failed | diverged: loss nan at step 340 | #7, #19 | 2 |" in text
