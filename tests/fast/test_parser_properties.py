"""Hypothesis on the two files an operator writes by hand, the inventory and the users file (#22): any text and any
structured-but-wrong document is refused with our error type and a message naming the file (and the host or user),
never another exception; a valid document written with tomli-w reads back as it was."""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.auth import ROLES, UsersFileError, _read, _write
from flows.errors import InventoryError
from steps.inventory import load_inventory

# Bounded for the fast tier: ~1-2 s per property.
BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HASH = "$2b$04$abcdefghijklmnopqrstuuJ0Gx0xmX2Lk4X3aOEXwzB3VmbJxFhl6"

# TOML-ish text: the characters TOML is made of, so the parser gets past its first byte now and then.
toml_text = st.text(alphabet=string.printable + "\u00e9\u0000\ufeff", max_size=300) | st.lists(
    st.sampled_from(
        [
            "[defaults]",
            "[[hosts]]",
            "[users.a]",
            "id = 1",
            "name = 'x'",
            'address = "127.0.0.1"',
            "roles = [",
            "]",
            "= ",
            "key_file = '~nosuch/x'",
            "ssh_port = 70000",
            "[[",
            "a = [[[[",
            '"""',
            "\n",
            "x.y.z = 1",
        ]
    ),
    max_size=20,
).map("\n".join)

# Any TOML value: scalars, arrays and tables, nested a little.
scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.sampled_from(["~nosuchuser/key", "~", "/", "127.0.0.1", "::1", "ADMIN", HASH, "h-1", "/home/a/../b"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
HOST_KEYS = ["id", "name", "address", "ssh_port", "user", "key_file", "known_hosts", "agent_home", "extra"]
hosts = st.dictionaries(st.sampled_from(HOST_KEYS), values, max_size=6)
inventories = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.dictionaries(st.sampled_from(HOST_KEYS), values, max_size=3) | values,
        "hosts": st.lists(hosts, max_size=3) | values,
        "other": values,
    },
)
user_entries = st.fixed_dictionaries(
    {},
    optional={
        "password_hash": st.just(HASH) | values,
        "roles": st.lists(st.sampled_from(sorted(ROLES)) | values, max_size=3) | values,
        "access_keys": st.lists(
            st.fixed_dictionaries(
                {}, optional={"id": st.just("k" * 16) | values, "secret": st.just("s" * 16) | values}
            ),
            max_size=2,
        )
        | values,
    },
)
users_files = st.fixed_dictionaries(
    {}, optional={"users": st.dictionaries(st.text(max_size=10), user_entries | values, max_size=3) | values}
)


def _file(text: str) -> Path:
    """A fresh 0600 file with ``text`` (hypothesis runs many examples per test: no pytest tmp_path per example)."""
    fd, name = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(text)
    return Path(name)


def _dump(document: dict) -> str | None:
    try:
        return tomli_w.dumps(document)
    except (TypeError, ValueError):  # e.g. a key or value TOML cannot hold
        return None


# After the file's path, a refusal says where in the file: the TOML itself, a section, a host (and its field), a user.
INVENTORY_WHERE = ("not valid TOML", "section", "[defaults]", "no hosts", "host #")
USERS_WHERE = ("cannot read the users file", "'users'", "user ", "no users", "access key")


def _inventory_outcome(text: str) -> None:
    path = _file(text)
    try:
        load_inventory(path)
    except InventoryError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and any(w in message for w in INVENTORY_WHERE), message
        if "host #" in message:
            assert "field '" in message or "must be a table" in message, message
    finally:
        path.unlink()


def _users_outcome(text: str) -> None:
    path = _file(text)
    try:
        _read(path)
    except UsersFileError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and any(w in message for w in USERS_WHERE), message
    finally:
        path.unlink()


class TestInventory:
    @BOUNDED
    @given(toml_text)
    def test_any_text_is_an_inventory_or_an_inventory_error_naming_the_file(self, text):
        """Arbitrary TOML-ish text: loaded, or InventoryError with the file's path; nothing else escapes (#22)."""
        _inventory_outcome(text)

    @BOUNDED
    @given(inventories)
    def test_a_wrong_document_is_an_inventory_error_naming_the_file(self, document):
        """Valid TOML with wrong sections, types and values: loaded, or InventoryError naming the file (#22)."""
        text = _dump(document)
        if text is not None:
            _inventory_outcome(text)

    @BOUNDED
    @given(
        st.lists(
            st.fixed_dictionaries(
                {
                    "id": st.integers(1, 2**53 - 1),
                    "name": st.text(min_size=1, max_size=20),
                    "address": st.ip_addresses().map(str)
                    | st.from_regex(r"[a-z][a-z0-9]{0,9}(\.[a-z]{2,5})?", fullmatch=True),
                },
                optional={
                    "ssh_port": st.integers(1, 65535),
                    "user": st.from_regex(r"[a-z_][a-z0-9_.-]{0,10}", fullmatch=True),
                    "agent_home": st.from_regex(r"/[A-Za-z0-9_]{1,8}(/[A-Za-z0-9_]{1,8}){0,2}", fullmatch=True),
                },
            ),
            min_size=1,
            max_size=4,
            unique_by=lambda host: host["id"],
        )
    )
    def test_a_valid_inventory_reads_back_as_written(self, entries):
        """A valid inventory written with tomli-w loads with every host and field as written."""
        path = _file(tomli_w.dumps({"hosts": entries}))
        try:
            inventory = load_inventory(path)
        finally:
            path.unlink()
        assert list(inventory.hosts) == [entry["id"] for entry in entries]
        for entry in entries:
            host = inventory.hosts[entry["id"]].model_dump()
            assert {key: host[key] for key in entry} == entry


class TestUsersFile:
    @BOUNDED
    @given(toml_text)
    def test_any_text_is_a_users_file_or_an_error_naming_the_file(self, text):
        """Arbitrary TOML-ish text: read, or UsersFileError with the file's path; nothing else escapes (#22)."""
        _users_outcome(text)

    @BOUNDED
    @given(users_files)
    def test_a_wrong_document_is_an_error_naming_the_file(self, document):
        """Valid TOML with wrong tables, types and values: read, or UsersFileError naming the file (#22)."""
        text = _dump(document)
        if text is not None:
            _users_outcome(text)

    @BOUNDED
    @given(
        st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_.@-]{1,20}", fullmatch=True),
            st.fixed_dictionaries(
                {"password_hash": st.just(HASH), "roles": st.lists(st.sampled_from(sorted(ROLES)), unique=True)},
                optional={
                    "access_keys": st.lists(
                        st.fixed_dictionaries(
                            {
                                "id": st.from_regex(r"[A-Za-z0-9_-]{16,24}", fullmatch=True),
                                "secret": st.from_regex(r"[A-Za-z0-9_-]{16,24}", fullmatch=True),
                            }
                        ),
                        max_size=2,
                        unique_by=lambda key: key["id"],
                    )
                },
            ),
            min_size=1,
            max_size=3,
        )
    )
    def test_a_valid_users_file_reads_back_as_written(self, entries):
        """Users written by the users file's own writer read back with their roles and access keys."""
        key_ids = [key["id"] for entry in entries.values() for key in entry.get("access_keys", [])]
        if len(key_ids) != len(set(key_ids)):
            return  # one key held by two users is refused on purpose (tested in test_api.py)
        path = _file("")
        try:
            _write(path, entries)
            users, keys = _read(path)
        finally:
            path.unlink()
        assert {name: user.roles for name, (_, user) in users.items()} == {
            name: tuple(entry["roles"]) for name, entry in entries.items()
        }
        assert keys == {
            key["id"]: (key["secret"], name) for name, entry in entries.items() for key in entry.get("access_keys", [])
        }


HOST = '[[hosts]]\nid = 1\nname = "a"\naddress = "127.0.0.1"\n'
USER = f'[users.a]\npassword_hash = "{HASH}"\n'


class TestFindings:
    """What the properties above found (#22), each once more as a plain case."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a = " + "[" * 5000 + "]" * 5000, "nested too deep"),
            ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "nested too deep"),
            (HOST + 'key_file = "~nosuchuser-22/key"\n', "field 'key_file'"),
            (HOST + 'known_hosts = "/etc/a\\u0000b"\n', "without NUL characters"),
        ],
        ids=["deep-arrays", "deep-tables", "unknown-home", "nul-in-path"],
    )
    def test_inventory_refusals_name_the_file_and_the_field(self, text, expected):
        """Regression (#22): RecursionError, RuntimeError (expanduser of ~unknown) escaped; a NUL path was taken."""
        path = _file(text)
        try:
            with pytest.raises(InventoryError) as caught:
                load_inventory(path)
        finally:
            path.unlink()
        assert str(path) in str(caught.value) and expected in str(caught.value)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("users = " + "[" * 5000 + "]" * 5000, "nested too deep"),
            ("users = 1", "'users' must be a table"),
            (USER + "roles = [{ a = 1 }]\n", "field 'roles'"),
        ],
        ids=["deep-arrays", "users-not-a-table", "role-not-a-string"],
    )
    def test_users_file_refusals_name_the_file_and_the_field(self, text, expected):
        """Regression (#22): RecursionError, AttributeError (users = 1), TypeError (a table as a role) escaped."""
        path = _file(text)
        try:
            with pytest.raises(UsersFileError) as caught:
                _read(path)
        finally:
            path.unlink()
        assert str(path) in str(caught.value) and expected in str(caught.value)

    def test_adding_a_user_to_a_wrong_users_file_is_an_error_naming_it(self):
        """Regression (#22): `user add` on a file with users = 1 raised TypeError; now UsersFileError."""
        from deployments.auth import add_user

        path = _file("users = 1\n")
        try:
            with pytest.raises(UsersFileError, match="must be a table"):
                add_user(path, "bob", "bob-pass-1", ["ADMIN"])
        finally:
            path.unlink()
