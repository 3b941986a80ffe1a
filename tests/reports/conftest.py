"""Shared results for the reports tests: the SAMPLE result, built once per session."""

from __future__ import annotations

import pytest

from reports.sample import sample_result


@pytest.fixture(scope="session")
def sample():
    """The SAMPLE result without image grids (do not mutate: build a fresh one for that)."""
    return sample_result()


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory):
    """A folder holding the SAMPLE result's image grids, and that result."""
    folder = tmp_path_factory.mktemp("sample")
    return folder, sample_result(folder)


@pytest.fixture(scope="session")
def sample_report(sample_folder):
    """The SAMPLE report written once: (folder, result, path of report.html)."""
    from reports.html import write_report
    from reports.schema import save_results

    folder, result = sample_folder
    save_results(result, folder)
    return folder, result, write_report(result, folder)
