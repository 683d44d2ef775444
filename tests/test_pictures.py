"""Pictures: the layer graph with BN sites, SwitchNorm's learned shares, site fidelity."""

import json

import numpy as np
import pytest

import normswap
from normswap.cli import main
from normswap.graph import build_graph
from normswap.pictures.graph_picture import to_dot
from normswap.pictures.plots import site_fidelity, switch_shares
from tests.models import nested_model, small_cnn


def test_dot_marks_sites_and_their_planned_fate():
    model = small_cnn()
    plan = normswap.plan(model, "fold")
    dot = to_dot(build_graph(model), plan, "small_cnn")
    assert dot.startswith('digraph "small_cnn"') and dot.rstrip().endswith("}")
    assert dot.count("fillcolor") == 4  # the four BN sites
    assert "b1_bn\\nBatchNormalization\\n→ fold" in dot
    assert "→ frozenbn" in dot  # the site after the Add falls back
    nested = to_dot(build_graph(nested_model()))
    assert nested.count("subgraph cluster_") == 2 and "BN site" in nested


def test_switch_shares_and_fidelity_rows():
    model = normswap.swap(small_cnn(), "switchnorm", switch_init="uniform")
    rows = dict((name, (m, v)) for name, m, v in switch_shares(model))
    np.testing.assert_allclose(rows["b1_bn"][0], [1 / 3] * 3, rtol=1e-5)
    assert len(rows["fc_bn"][1]) == 3
    report = {"sites": [{"path": "a", "fidelity": {"r2_before": 0.1, "r2_after": 0.9,
                                                   "block": {"r2_after": 0.95}}},
                        {"path": "b", "fidelity": None}]}
    assert site_fidelity(report) == [("a", 0.1, 0.9, 0.95)]


def test_commands_write_pictures_or_say_why_not(tmp_path, capsys, trained):
    pytest.importorskip("matplotlib")
    model, calibration, _ = trained
    source = tmp_path / "demo.keras"
    model.save(source)
    np.savez(tmp_path / "calib.npz", x=calibration[:32])
    report = tmp_path / "report.json"
    assert main([str(source), "--to", "switchnorm", "-o", str(tmp_path / "sn.keras"),
                 "--switch-init", "uniform", "--calibrate", str(tmp_path / "calib.npz"),
                 "--report-file", str(report)]) == 0
    assert json.loads(report.read_text())["target"] == "switchnorm"
    picture = tmp_path / "sn.png"
    assert main(["plot", str(tmp_path / "sn.keras"), "-o", str(picture),
                 "--report", str(report)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    graph = tmp_path / "graph.png"
    assert main(["inspect", str(source), "--graph", str(graph), "--to", "frn"]) == 0
    assert graph.stat().st_size > 1000
    assert main(["inspect", str(source), "--graph", str(tmp_path / "g.dot")]) == 0
    assert "BN site" in (tmp_path / "g.dot").read_text()
    capsys.readouterr()
    assert main(["plot", str(source), "-o", str(tmp_path / "none.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to plot" in err[0]
    assert main(["inspect", str(source), "--graph", str(tmp_path / "g.gif")]) == 2


def test_plot_refuses_an_output_it_cannot_write_before_loading(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from normswap.cli import main

    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the output is checked first")
    for output, phrase in [(tmp_path / "missing" / "p.png", "does not exist"),
                           (model, "which this command reads or writes")]:
        assert main(["plot", str(model), "-o", str(output)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "the picture" in error and phrase in error
    assert model.read_bytes() == b"not read: the output is checked first"
