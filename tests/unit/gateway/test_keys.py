import hashlib

from services.gateway import keys


def test_generated_key_parses_back_to_its_id_and_secret() -> None:
    new = keys.generate()
    parsed = keys.parse(new.token)
    assert parsed is not None
    assert parsed.key_id == new.key_id
    assert keys.matches(parsed, new.secret_sha256)
    assert new.token.startswith("cfk_")


def test_secret_carries_at_least_160_bits() -> None:
    parsed = keys.parse(keys.generate().token)
    assert parsed is not None
    assert len(parsed.secret) * 5 >= 160


def test_stored_hash_is_not_the_secret() -> None:
    new = keys.generate()
    parsed = keys.parse(new.token)
    assert parsed is not None
    assert new.secret_sha256 == hashlib.sha256(parsed.secret.encode()).digest()
    assert parsed.secret.encode() not in new.secret_sha256


def test_a_typo_fails_the_checksum() -> None:
    token = keys.generate().token
    i = len("cfk_") + 20
    typo = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
    assert keys.parse(typo) is None


def test_foreign_strings_are_not_keys() -> None:
    for text in ["", "cfk_", "Bearer x", "sk-" + "a" * 60, keys.generate().token + "x"]:
        assert keys.parse(text) is None


def test_wrong_secret_does_not_match() -> None:
    a, b = keys.generate(), keys.generate()
    parsed = keys.parse(a.token)
    assert parsed is not None
    assert not keys.matches(parsed, b.secret_sha256)
