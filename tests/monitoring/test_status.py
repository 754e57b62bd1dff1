"""`recforge status`: what is live, and a warning when the registry's champion is not what is served."""

from pipelines.monitoring.status import champion_not_published, status_lines
from pipelines.training.tracking import CHAMPION, configure, make_champion, version_by_alias
from serving.format import current_version
from tests.conftest import copy_home


def test_status_has_no_warning_while_the_champion_is_the_published_model(published):
    assert champion_not_published(published) is None
    assert not [line for line in status_lines(published) if line.startswith("WARNING")]


def test_status_warns_when_the_champion_is_not_the_published_version(published, tmp_path):
    settings = copy_home(published, tmp_path / "home")
    client = configure(settings)
    name = settings.registered_model_name
    served = version_by_alias(client, name, CHAMPION)
    newer = client.create_model_version(name, served.source, run_id=served.run_id)
    make_champion(client, name, str(newer.version))  # as `recforge models promote` does, without publishing

    warning = [line for line in status_lines(settings) if line.startswith("WARNING")]
    live = current_version(settings.published_dir)
    assert warning == [
        f"WARNING: the champion is v{newer.version} but the live publication {live} serves v{served.version}: "
        "run `recforge publish` to serve the champion"
    ]


def test_status_has_nothing_to_compare_before_the_first_publication(trained, tmp_path):
    settings = copy_home(trained[0], tmp_path / "home")
    assert current_version(settings.published_dir) is None
    assert champion_not_published(settings) is None
