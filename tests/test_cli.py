import json
import subprocess
import sys

from click.testing import CliRunner

from frugalnas.cli import cli
from sources_on_disk import write_cifar10


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_ingest_json_is_last_line_and_matches_card(tmp_path):
    result = run("ingest", "shapes:20", "--out", str(tmp_path / "s"), "--codec", "webp", "--quality", "60", "--json")
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout.strip().splitlines()[-1])
    assert card["codec"] == "webp" and card["quality"] == 60
    assert card == json.loads((tmp_path / "s" / "dataset.json").read_text())
    info = run("info", str(tmp_path / "s"), "--json")
    assert json.loads(info.stdout.strip().splitlines()[-1]) == card


def test_bad_records_are_summarised_on_stderr_and_strict_exits_2(tmp_path):
    write_cifar10(tmp_path / "c", bad_labels=True)
    result = run("ingest", f"cifar:{tmp_path / 'c'}", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    assert "skipped 1 bad record(s): 1 label out of range" in result.stderr
    strict = run("ingest", f"cifar:{tmp_path / 'c'}", "--out", str(tmp_path / "s"), "--strict")
    assert strict.exit_code == 2
    assert "data_batch_1#3: label out of range: 42" in strict.stderr


def test_unknown_source_codec_and_missing_path_exit_2(tmp_path):
    for args, fragment in (
        (["ingest", "imagenet", "--out", str(tmp_path / "x")], "allowed: cifar, digits, folder, mnist, shapes, voc, yolo"),
        (["ingest", "digits", "--codec", "bmp", "--out", str(tmp_path / "x")], "allowed: avif, h264, h265, jpeg, png, raw, webp"),
        (["ingest", f"mnist:{tmp_path / 'none'}", "--out", str(tmp_path / "x")], "mnist path not found"),
        (["info", str(tmp_path / "none")], "does not exist"),
    ):
        result = run(*args)
        assert result.exit_code == 2, args
        assert fragment in result.stderr


def test_validate(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: demo\nselection: {policy: dds}\n")
    assert run("validate", str(good)).exit_code == 0
    dumped = run("validate", str(good), "--set", "search.budget=3", "--json")
    assert json.loads(dumped.stdout.strip().splitlines()[-1])["search"]["budget"] == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nselection: {policy: greedy}\n")
    result = run("validate", str(bad))
    assert result.exit_code == 2 and "selection.policy" in result.stderr and "'greedy'" in result.stderr


def test_console_script_help():
    # the installed entry point, as a user runs it
    result = subprocess.run([sys.executable, "-m", "frugalnas.cli", "ingest", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--codec" in result.stdout and "yolo:PATH" in result.stdout
