"""Fixtures the ingest tests share."""

import pytest

from pipelines.simulate import catalog_file
from tests.conftest import copy_home


@pytest.fixture
def handmade(tmp_path, simulated):
    """A home with the simulated catalog but hand-written landing files."""
    settings = copy_home(simulated, tmp_path / "home")
    for day_dir in (settings.landing_dir / "events").iterdir():
        for f in day_dir.iterdir():
            f.unlink()
        day_dir.rmdir()
    assert catalog_file(settings.landing_dir).exists()
    return settings
