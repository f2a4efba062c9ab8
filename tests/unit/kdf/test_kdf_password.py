"""KDF's password policy, checked against KDF's own unit-test cases (password_policy.rs)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdf_remote.kdf.password import check_password, generate_rpc_password

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("1234567", "Password length should be at least 8 characters long"),
        ("pass123worD", "Password should contain at least 1 special character"),
        ("SecretPassSoStrong$*", "Password should contain at least 1 digit"),
        ("SECRETPASS-SOSTRONG123*", "Password should contain at least 1 lowercase character"),
        ("secretpass-sostrong123*", "Password should contain at least 1 uppercase character"),
        (
            "SecretPassSoStrong123*aaa",
            "Password can't contain the same character 3 times in a row",
        ),
        ("Password123*$", "Password can't contain the word password"),
        ("Foopassword123*$", "Password can't contain the word password"),
        ("", "Password length should be at least 8 characters long"),
    ],
)
def test_policy_messages_match_kdf(password: str, message: str) -> None:
    """Each failing case returns KDF's exact message, in KDF's check order."""
    assert check_password(password) == message


@pytest.mark.parametrize(
    "password",
    [
        "SecretPassSoStrong*!1234567891012",
        "StrongPass123*",
        "StrongPass123[]\\± ",
        "StrongPass123£StrongPass123£Pass",
        "Ab1!aAb1",
    ],
)
def test_policy_accepts_kdf_valid_passwords(password: str) -> None:
    """Passwords KDF's own tests accept pass, including ones longer than 32 characters."""
    assert check_password(password) is None


def test_length_counts_unicode_characters_not_bytes() -> None:
    """Seven characters fail even when they take more than 8 bytes, as in KDF (chars().count())."""
    assert check_password("Aé1!éé€") == "Password length should be at least 8 characters long"
    assert check_password("Aé1!aé€x") is None


def test_non_ascii_counts_as_special() -> None:
    """A character outside [A-Za-z0-9] satisfies the special-character rule."""
    assert check_password("Abcdefg1é") is None


def test_generated_passwords_pass_and_differ() -> None:
    """The generator's output always passes and is not repeated."""
    passwords = {generate_rpc_password() for _ in range(500)}
    assert len(passwords) == 500
    assert all(check_password(p) is None for p in passwords)
    assert all(len(p) == 32 for p in passwords)


@settings(max_examples=200)
@given(st.integers(min_value=8, max_value=64))
def test_generated_password_of_any_allowed_length_passes(length: int) -> None:
    """Any length from the minimum up gives a policy-compliant password of that length."""
    password = generate_rpc_password(length)
    assert len(password) == length
    assert check_password(password) is None


def test_generator_refuses_too_short() -> None:
    """A length below KDF's minimum cannot be satisfied and is refused."""
    with pytest.raises(ValueError, match="length"):
        generate_rpc_password(7)
