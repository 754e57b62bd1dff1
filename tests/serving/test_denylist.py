"""The deny list: forgotten users as salted hashes, each held until a publication newer than the one
that was live when they were forgotten is live (serving/denylist.py)."""

from serving.denylist import active_digests, add_to_denylist, is_denied, read_denylist


def test_an_entry_holds_until_a_newer_publication_is_live(tmp_path):
    path = tmp_path / "denylist.txt"
    assert add_to_denylist(path, ["u1", "u2"], "20260101T000000Z-v1") == 2
    salt, entries = read_denylist(path)
    assert is_denied(salt, active_digests(entries, "20260101T000000Z-v1"), "u1")
    assert is_denied(salt, active_digests(entries, "20251231T000000Z-v0"), "u2")  # a rollback to older: still held
    assert not is_denied(salt, active_digests(entries, "20260102T000000Z-v1"), "u1")  # the clean one is live
    assert not is_denied(salt, active_digests(entries, "20260101T000000Z-v1"), "u3")


def test_the_file_never_holds_an_id_and_adding_again_changes_nothing(tmp_path):
    path = tmp_path / "denylist.txt"
    add_to_denylist(path, ["u000123"], None)  # nothing published yet: held until something is
    first = path.read_text()
    assert "u000123" not in first
    assert add_to_denylist(path, ["u000123"], None) == 0 and path.read_text() == first
    salt, entries = read_denylist(path)
    assert is_denied(salt, active_digests(entries, None), "u000123")
    assert not is_denied(salt, active_digests(entries, "20990101T000000Z-v9"), "u000123")


def test_no_file_denies_nobody(tmp_path):
    salt, entries = read_denylist(tmp_path / "absent.txt")
    assert salt is None and not is_denied(salt, active_digests(entries, None), "u1")
