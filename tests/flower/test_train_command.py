"""`privaudit train --engine flower-simulation` writes the in-process run folder's bytes."""

import json

from privaudit.cli import main

from flower_helpers import folder_difference, run_folder_bytes


def test_train_on_flower_simulation_equals_inprocess(tmp_path, capsys):
    common = ["train", "--method", "privacyface", "--scale", "tiny", "--rounds", "1", "--seed", "0", "--quiet",
              "--from-scratch"]
    assert main([*common, "--out", str(tmp_path / "inprocess")]) == 0
    assert main([*common, "--out", str(tmp_path / "flower"), "--engine", "flower-simulation", "--supernodes", "2"]) == 0
    skip = ("timings.json", "flower.json", "config.json")
    same = run_folder_bytes(tmp_path / "inprocess", skip) == run_folder_bytes(tmp_path / "flower", skip)
    assert same, folder_difference(tmp_path / "inprocess", tmp_path / "flower", skip)
    assert json.loads((tmp_path / "flower" / "config.json").read_text())["engine"] == "flower-simulation"
    assert "engine" not in json.loads((tmp_path / "inprocess" / "config.json").read_text())
    assert json.loads((tmp_path / "flower" / "flower.json").read_text())["supernodes"] == 2
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "x"), "--supernodes", "2"]) == 2
    assert "--supernodes applies to the Flower engines only" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--engine", "flower-simulation", "--insecure"]) == 2
    assert "--insecure applies to --engine flower-deployment only" in capsys.readouterr().err
