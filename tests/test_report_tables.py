"""Tables of measured figures made from run folders: `secureml report --table` and the
generated blocks of docs/ (`secureml report --docs FILE... [--check]`)."""
import json
from pathlib import Path

import pytest
import yaml

from secureml.cli import main as cli_main
from secureml.errors import ConfigError
from secureml.report.tables import render_table, update_docs

ROOT = Path(__file__).resolve().parents[1]


def _run_folder(root: Path, accuracies: dict) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"name": root.name,
                                                      "variants": {v: {} for v in accuracies}},
                                                     sort_keys=False))
    for variant, accuracy in accuracies.items():
        (root / variant).mkdir()
        metrics = {"test": {"accuracy": accuracy}, "membership": {"best": {"tpr_at_0.1%_fpr": 0.006}}}
        if variant == "dp":
            metrics["privacy"] = {"epsilon": 2.99876}
        (root / variant / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_table_reads_each_variant_with_formats_and_missing_values(tmp_path):
    run = _run_folder(tmp_path / "quick", {"plain": 0.96912, "dp": 0.8361})
    table = render_table([run], "accuracy=test.accuracy:.3f,epsilon=privacy.epsilon:.2f,"
                                "membership.best.tpr_at_0.1%_fpr:.1%")
    assert table.splitlines() == [
        "| variant | accuracy | epsilon | membership.best.tpr_at_0.1%\\_fpr |",
        "|---|---|---|---|",
        "| plain | 0.969 | – | 0.6% |",
        "| dp | 0.836 | 3.00 | 0.6% |"]


def test_bad_columns_and_empty_folders_are_refused(tmp_path):
    run = _run_folder(tmp_path / "quick", {"plain": 0.9})
    with pytest.raises(ConfigError, match="names no metrics path"):
        render_table([run], "accuracy=")
    with pytest.raises(ConfigError, match="format '.3q'"):
        render_table([run], "test.accuracy:.3q")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no variant with a metrics.json"):
        render_table([tmp_path / "empty"], "test.accuracy")


def test_docs_blocks_are_remade_and_check_finds_stale_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _run_folder(tmp_path / "evidence", {"plain": 0.5, "dp": 0.25})
    page = tmp_path / "page.md"
    command = 'secureml report evidence --table "acc=test.accuracy:.2f"'
    page.write_text(f"Intro.\n\n<!-- generated: {command} -->\n| typed | by hand |\n"
                    f"<!-- end generated -->\n\nOutro.\n")
    assert cli_main(["report", "--docs", str(page), "--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert "typed" in page.read_text()  # --check writes nothing
    assert update_docs([page]) == [page]
    text = page.read_text()
    assert "| plain | 0.50 |\n| dp | 0.25 |\n<!-- end generated -->\n\nOutro." in text
    assert "typed" not in text and text.startswith("Intro.")
    assert cli_main(["report", "--docs", str(page), "--check"]) == 0
    # A figure that changes in the run folder makes the page stale again.
    (tmp_path / "evidence" / "dp" / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.3}}))
    assert update_docs([page], check=True) == [page]


def test_a_block_must_name_a_report_table_command(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- generated: rm -rf / -->\nx\n<!-- end generated -->\n")
    with pytest.raises(ConfigError, match=r"page.md:1: a generated block must name"):
        update_docs([page])


def test_every_generated_table_in_the_docs_is_current(monkeypatch):
    """The figures in docs/ come from the run folders their blocks name (docs/evidence/)."""
    monkeypatch.chdir(ROOT)
    pages = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    assert update_docs(pages, check=True) == []
