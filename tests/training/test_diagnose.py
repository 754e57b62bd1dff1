"""`recforge diagnose USER`: each outcome means what it says, the rules are the real ones, ids stay harmless."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from models.evaluation.diagnosis import CANDIDATE_GENERATION, FALLBACK, NONE, RANKING, RULES, UserDiagnosis
from models.evaluation.evaluate import EvaluationConfig, fold_lists
from models.lists.ranked import ListRules, ListTrace, ranked_lists
from models.lists.rules import allowed_and_categories, catalog_status
from pipelines.reports.diagnosis_report import PLAIN_ID, diagnosis_text, safe_file_stem
from pipelines.training.diagnose import EXIT_UNKNOWN_USER, DiagnoseError, Diagnoser, run_diagnosis
from pipelines.warehouse.connection import connect
from tests.conftest import copy_home, run_recforge, screenshot

HOSTILE = "<img src=x onerror=alert(1)>/../../etc/passwd"
K = 10


@pytest.fixture(scope="module")
def home(trained, tmp_path_factory):
    """A private copy of the trained home (loading the champion downloads it into the home)."""
    return copy_home(trained[0], tmp_path_factory.mktemp("diagnose") / "home")


@pytest.fixture(scope="module")
def shallow(home) -> Diagnoser:
    """Generators judged on their top 10: every outcome occurs among the tiny world's users."""
    return Diagnoser(home, k=K, depth=K)


@pytest.fixture(scope="module")
def held_out(shallow) -> dict[str, UserDiagnosis]:
    """Diagnoses of the fold's users who have a history before the cutoff, by user id."""
    fold = shallow.backtest_fold().fold
    users = fold.eval_user_ids[fold.train_rows >= 0][:150]
    return {str(u): shallow.diagnose(str(u)) for u in users}


def first(diagnoses: dict[str, UserDiagnosis], outcome: str) -> UserDiagnosis:
    found = [d for d in diagnoses.values() if d.outcome == outcome]
    assert found, f"no user with outcome {outcome!r} among {len(diagnoses)}"
    return found[0]


def pre_rule_ranks(d: UserDiagnosis) -> list[int]:
    return [rank for rank in d.ranking.target_ranks.values() if rank is not None]


def test_a_hit_is_diagnosed_none_with_the_target_in_the_final_top_k(held_out):
    d = first(held_out, NONE)
    hits = [e for e in d.final if e.is_target]
    assert hits and all(e.item in d.targets and e.rank <= K for e in hits)
    assert d.explanation.startswith("none: a hit") and hits[0].item in d.explanation


def test_every_outcome_follows_its_definition(held_out):
    """Over every diagnosed user: the outcome is the first place in the pipeline where all targets were lost."""
    seen = set()
    for d in held_out.values():
        seen.add(d.outcome)
        in_final = any(e.is_target for e in d.final)
        proposed = any(r is not None and r <= d.depth for v in d.generators for r in v.target_ranks.values())
        assert d.target_kind == "held-out" and d.targets + d.unknown_targets, d.user_id
        if d.outcome == NONE:
            assert in_final, d.user_id
        elif d.outcome == RULES:
            assert not in_final and min(pre_rule_ranks(d)) <= K, d.user_id
            assert any(r.is_target for r in d.removals), d.user_id  # the rule that removed it is named
        elif d.outcome == RANKING:
            assert not in_final and proposed and min(pre_rule_ranks(d), default=K + 1) > K, d.user_id
        else:
            assert d.outcome == CANDIDATE_GENERATION and not in_final and not proposed, d.user_id
    assert seen == {NONE, RULES, RANKING, CANDIDATE_GENERATION}


def test_candidate_generation_names_the_closest_generator(held_out):
    d = first(held_out, CANDIDATE_GENERATION)
    assert all(r is None or r > d.depth for v in d.generators for r in v.target_ranks.values())
    assert f"top {d.depth}" in d.explanation


def test_ranking_names_the_generator_that_proposed_the_item(held_out):
    d = first(held_out, RANKING)
    match = re.match(
        r"ranking: (?P<item>\S+) was proposed by (?P<name>\S+) \(rank (?P<rank>\d+)", d.explanation
    ) or re.match(r"ranking: (?P<name>\S+) proposes (?P<item>\S+) at rank (?P<rank>\d+)", d.explanation)
    assert match, d.explanation
    view = next(v for v in d.generators if v.name == match["name"])
    assert view.target_ranks[match["item"]] == int(match["rank"]) <= d.depth
    assert d.ranking.target_ranks[match["item"]] > K


def test_blocking_the_hit_item_turns_a_hit_into_a_rules_diagnosis(home, held_out, tmp_path):
    """Constructed: the champion's hit for a user is blocked in the catalog; the blocking rule is blamed."""
    d = next(d for d in held_out.values() if d.outcome == NONE and d.history_items >= 5)  # not cold: no blend
    hits = [e.item for e in d.final if e.is_target]
    settings = copy_home(home, tmp_path / "home")
    with connect(settings) as con:
        for item in hits:
            con.execute("update marts.item_features set is_blocked = true where item_id = ?", [item])
    blocked = Diagnoser(settings, k=K, depth=K).diagnose(d.user_id)
    assert blocked.outcome == RULES, blocked.explanation
    removed = {r.item: r for r in blocked.removals if r.is_target}
    assert set(hits) <= set(removed)
    assert all(removed[i].rule == "exclude_blocked_items" and removed[i].reason == "blocked" for i in hits)
    assert removed[hits[0]].rank_after is None
    assert "exclude_blocked_items (blocked)" in blocked.explanation


def test_the_diagnosed_list_is_the_evaluated_list(shallow, held_out):
    """The traced lists are exactly what evaluation scores (and publication stores) for the user."""
    fitted = shallow.backtest_fold()
    config = EvaluationConfig(k=K, recall_k=K, rules=shallow.rules)
    lists = fold_lists(fitted.final, fitted.fold, shallow.catalog, config)["rules"]
    for d in list(held_out.values())[:40]:
        row = int(np.flatnonzero(fitted.fold.eval_user_ids == d.user_id)[0])
        expected = [str(fitted.final.item_ids[i]) for i in lists[row][:K] if i >= 0]
        assert [e.item for e in d.final] == expected, d.user_id


def test_a_trace_changes_nothing_in_the_lists(shallow):
    fitted = shallow.backtest_fold()
    allowed, categories = allowed_and_categories(fitted.fold.train.item_ids, shallow.catalog)
    users = np.arange(min(60, fitted.fold.train.n_users))
    rules = ListRules(top_n=20, candidate_margin=10, mmr_enabled=True)
    plain = ranked_lists(fitted.final, users, rules, allowed, categories)
    trace = ListTrace()
    traced = ranked_lists(fitted.final, users, rules, allowed, categories, trace=trace)
    np.testing.assert_array_equal(plain.ranked, traced.ranked)
    names = [stage for stage, _ in trace.stages]
    assert names == [
        "model_unfiltered",
        "exclude_seen_items",
        "exclude_blocked_and_out_of_stock_items",
        "cold_user_popularity_blend",
        "mmr_diversity",
        "category_cap_top10",
    ]


def test_catalog_reasons_agree_with_the_allowed_mask(shallow):
    items = np.concatenate([shallow.champion.item_ids, np.array(["not-in-catalog"], dtype=object)])
    forbidden, _ = catalog_status(items, shallow.catalog)
    allowed, _ = allowed_and_categories(items, shallow.catalog)
    np.testing.assert_array_equal(forbidden == "", allowed)
    assert forbidden[-1] == "not in the catalog"
    assert set(forbidden) <= {"", "blocked", "out of stock", "not in the catalog"}


def test_a_user_without_held_out_items_is_judged_on_their_most_recent_items(shallow):
    event_log = shallow.event_log
    fold = shallow.backtest_fold().fold
    known = set(shallow.champion.user_ids.tolist())
    with_history = set(fold.eval_user_ids[fold.train_rows >= 0].tolist())
    counts = pd.Series(event_log.user_ids[event_log.users]).value_counts()
    user = next(u for u in counts.index if u in known and u not in with_history and counts[u] >= 5)
    d = shallow.diagnose(user)
    assert d.target_kind == "recent" and "most recent" in diagnosis_text(d)
    mine = event_log.users == np.flatnonzero(event_log.user_ids == user)[0]
    firsts = pd.DataFrame({"i": event_log.item_ids[event_log.items[mine]], "ts": event_log.ts[mine]})
    last = firsts.groupby("i")["ts"].min().sort_values().index[-shallow.settings.eval_leave_last_n :]
    assert sorted(d.targets + d.unknown_targets) == sorted(last)
    assert d.outcome in (NONE, RULES, RANKING, CANDIDATE_GENERATION)


def test_a_user_with_a_single_item_cannot_be_held_out_and_is_told_so(shallow):
    event_log = shallow.event_log
    fold = shallow.backtest_fold().fold
    with_history = set(fold.eval_user_ids[fold.train_rows >= 0].tolist())
    pairs = pd.DataFrame({"u": event_log.user_ids[event_log.users], "i": event_log.items}).drop_duplicates()
    single = pairs.groupby("u").size()
    candidates = [u for u in single[single == 1].index if u in set(shallow.champion.user_ids) and u not in with_history]
    if not candidates:
        pytest.skip("the tiny world has no known user with a single item")
    with pytest.raises(DiagnoseError, match="1 distinct item"):
        shallow.diagnose(candidates[0])


def test_an_unknown_user_gets_the_fallback_list(shallow):
    d = shallow.diagnose("nobody-like-this")
    assert d.outcome == FALLBACK and "popularity fallback" in d.explanation
    assert len(d.final) == K and all(e.reason == "popular" for e in d.final)


def test_k_and_depth_are_checked(home):
    with pytest.raises(DiagnoseError, match="1 <= k <= depth"):
        Diagnoser(home, k=20, depth=10)
    with pytest.raises(DiagnoseError, match="publish_top_n"):
        Diagnoser(home, k=home.publish_top_n + 1, depth=500)


@pytest.mark.parametrize("user_id", ["u000001", "a.b", "a_b", "..", "../x", HOSTILE, "é", "x" * 200])
def test_file_names_are_plain_and_distinct(user_id):
    stem = safe_file_stem(user_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", stem) and stem not in (".", "..")
    assert (stem == user_id) == bool(PLAIN_ID.fullmatch(user_id))
    others = {safe_file_stem(u) for u in ("a.b", "a_b", "a b", "a/b")}
    assert len(others) == 4


def test_a_hostile_id_is_escaped_and_stored_under_a_safe_name(home, tmp_path, chromium):
    settings = copy_home(home, tmp_path / "home")
    diagnosis, page, index = run_diagnosis(settings, HOSTILE, K, K)
    assert diagnosis.outcome == FALLBACK
    assert page.parent == settings.reports_dir / "diagnose" and page.name == f"{safe_file_stem(HOSTILE)}.html"
    assert sorted(p.name for p in page.parent.iterdir()) == [page.name, page.with_suffix(".json").name]
    text, listing = page.read_text(), index.read_text()
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "<img" not in listing and "&lt;img src=x onerror=alert(1)&gt;/../../etc/passwd" in listing
    assert f"href='diagnose/{page.name}'" in listing
    assert "http://" not in text and "https://" not in text and "<script" not in text
    picture = tmp_path / "diagnosis.png"
    shot = screenshot(chromium, page.as_uri(), picture)
    assert shot.returncode == 0 and picture.stat().st_size > 10_000, shot.stderr[-2000:]


def test_a_diagnosis_page_renders_offline_and_is_linked_from_the_index(home, held_out, tmp_path, chromium):
    settings = copy_home(home, tmp_path / "home")
    user = next(d.user_id for d in held_out.values() if d.outcome == RULES)
    diagnosis, page, index = run_diagnosis(settings, user, K, 100)
    text = page.read_text()
    for section in ("Targets", "Candidate generators (top 100 each)", "Business rules", f"Final top {K}"):
        assert section in text, section
    assert diagnosis.outcome in text and "http://" not in text and "https://" not in text
    assert f"href='diagnose/{user}.html'" in index.read_text()
    picture = tmp_path / "diagnosis.png"
    shot = screenshot(chromium, page.as_uri(), picture, window="1300,2400")
    assert shot.returncode == 0 and picture.stat().st_size > 30_000, shot.stderr[-2000:]


def test_the_cli_prints_the_diagnosis_and_exits_by_outcome(home, held_out, tmp_path):
    settings = copy_home(home, tmp_path / "home")
    user = first(held_out, NONE).user_id
    done = run_recforge(settings.home, "diagnose", user, "--k", str(K))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"user '{user}': none: a hit") and "diagnosis: none" in done.stdout
    assert (settings.reports_dir / "diagnose" / f"{user}.html").exists()

    unknown = run_recforge(settings.home, "diagnose", HOSTILE)
    assert unknown.returncode == EXIT_UNKNOWN_USER
    assert "is unknown to the champion: they get the popularity fallback" in unknown.stderr
    assert "fallback list (top 10)" in unknown.stdout

    bad = run_recforge(settings.home, "diagnose", user, "--k", "20", "--depth", "10")
    assert bad.returncode == 1 and "recforge diagnose: error: need 1 <= k <= depth" in bad.stderr
    assert run_recforge(settings.home, "diagnose", user, "--k", "0").returncode == 2  # argparse: not positive


def test_a_ranker_champion_is_diagnosed_through_its_own_generators(home):
    """For the two-stage ranker the generators are the ones inside it, fitted with it on the fold."""
    from models.evaluation.diagnosis import diagnose_user
    from models.ranker import RankerRecommender

    diagnoser = Diagnoser(home, k=K, depth=50)
    fold = diagnoser.backtest_fold().fold
    diagnoser.champion = RankerRecommender(  # only its recipe (name and parameters) is used by fit
        label_days=3,
        generators=("als", "popularity"),
        generator_params={"als": {"factors": 16, "iterations": 8}},
        candidates_per_generator=50,
        n_estimators=30,
        min_child_samples=10,
    )
    fitted = diagnoser.fit(fold)
    assert fitted.final.name == "ranker" and [name for name, _ in fitted.generators] == ["als", "popularity"]
    assert all(
        model is inner for (_, model), inner in zip(fitted.generators, fitted.final.serving_generators, strict=True)
    )
    assert fitted.skipped == {} and "top 50" in fitted.note
    forbidden, names = catalog_status(fold.train.item_ids, diagnoser.catalog)
    users = fold.eval_user_ids[fold.train_rows >= 0][:30]
    outcomes = set()
    for user in users:
        d = diagnose_user(
            fitted.final,
            fitted.generators,
            fold,
            str(user),
            diagnoser.rules,
            forbidden,
            names,
            K,
            50,
            generator_note=fitted.note,
        )
        assert d.model == "ranker" and d.ranking.note == fitted.note
        outcomes.add(d.outcome)
    assert outcomes <= {NONE, RULES, RANKING, CANDIDATE_GENERATION} and NONE in outcomes


def test_without_a_champion_the_diagnosis_says_so(built, tmp_path):
    from pipelines.publication.publish import PublishError

    settings = copy_home(built, tmp_path / "home")
    with pytest.raises(PublishError, match="has no 'champion' alias"):
        Diagnoser(settings)


def test_an_unreadable_diagnosis_record_is_left_out_of_the_index(home, tmp_path):
    from pipelines.reports.index import write_index

    settings = copy_home(home, tmp_path / "home")
    run_diagnosis(settings, "nobody-like-this", K, K)
    (settings.reports_dir / "diagnose" / "broken.json").write_text("{not json")
    listing = write_index(settings).read_text()
    assert "href='diagnose/nobody-like-this.html'" in listing and "broken" not in listing
