"""Provenance: the commit of the code, recorded per run start and named in the tables' reports."""
from __future__ import annotations

import shutil
import subprocess

import pytest

import ebm_vae.utils.provenance as prov


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_is_the_commit_and_says_when_tracked_files_changed(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    (repo / "ebm_vae").mkdir(parents=True)
    (repo / "ebm_vae" / "x.py").write_text("a = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    monkeypatch.setattr(prov, "SOURCE", repo)
    assert prov.code_version() == sha
    (repo / "untracked.txt").write_text("ignored")  # untracked files do not count
    assert prov.code_version() == sha
    (repo / "ebm_vae" / "x.py").write_text("a = 2\n")
    assert prov.code_version() == sha + "+changes"
    assert prov.short(prov.code_version()) == sha[:7] + "+changes"


def test_outside_a_checkout_the_code_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "SOURCE", tmp_path)
    assert prov.code_version() == prov.UNKNOWN


def test_a_fresh_start_replaces_and_a_resume_appends(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "code_version", lambda: "c" * 40)
    assert prov.run_code(tmp_path) == "not recorded"
    prov.record_start(tmp_path, None)
    prov.record_start(tmp_path, 100)
    assert [e["resumed_from"] for e in prov.read_provenance(tmp_path)] == [None, 100]
    monkeypatch.setattr(prov, "code_version", lambda: "d" * 40)
    prov.record_start(tmp_path, 200)
    assert prov.run_code(tmp_path) == "ccccccc, ddddddd"
    prov.record_start(tmp_path, None)
    assert prov.run_code(tmp_path) == "ddddddd"
    (tmp_path / prov.PROVENANCE).write_text("{torn")
    assert prov.read_provenance(tmp_path) == []
