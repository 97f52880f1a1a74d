"""canonical_digest: one digest per JSON value, whatever its key order."""

import hashlib

from contextos.digest import canonical_digest


def test_key_order_and_nesting_do_not_change_the_digest():
    first = canonical_digest({"b": [1, {"y": 2, "x": 1}], "a": "é"})
    second = canonical_digest({"a": "é", "b": [1, {"x": 1, "y": 2}]})
    assert first == second
    assert len(first) == 64


def test_it_is_the_sha256_of_compact_sorted_utf8_json():
    expected = hashlib.sha256('{"a":1,"b":"é"}'.encode()).hexdigest()
    assert canonical_digest({"b": "é", "a": 1}) == expected


def test_different_values_have_different_digests():
    assert canonical_digest(["ai.batch", {"n": 1}]) != canonical_digest(["ai.batch", {"n": 2}])
    assert canonical_digest("1") != canonical_digest(1)
