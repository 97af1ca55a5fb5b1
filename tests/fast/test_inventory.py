"""The inventory: TOML validated by pydantic, errors that name the file, the host and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.errors import InventoryError, UnknownHostError
from steps.inventory import load_inventory

GOOD = """
[defaults]
user = "admin"
ssh_port = 22
key_file = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
agent_home = "/home/admin/ocp_agent"

[[hosts]]
id = 1001
name = "obs-zone1-1"
address = "10.0.0.11"
ssh_port = 2201

[[hosts]]
id = 1002
name = "obs-zone1-2"
address = "obs2.example.com"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return path


def test_defaults_apply_and_hosts_override(tmp_path):
    """[defaults] fill every host; a host's own ssh_port wins."""
    inv = load_inventory(write(tmp_path, GOOD))
    assert inv.hosts[1001].ssh_port == 2201 and inv.hosts[1002].ssh_port == 22
    assert inv.hosts[1002].user == "admin" and inv.hosts[1001].key_file == Path("~/.ssh/id_ed25519").expanduser()


def test_select_keeps_request_order(tmp_path):
    """select() returns hosts in the order asked."""
    inv = load_inventory(write(tmp_path, GOOD))
    assert [h.id for h in inv.select([1002, 1001])] == [1002, 1001]


def test_unknown_ids_are_all_named(tmp_path):
    """Every unknown id is named, with the inventory's path."""
    inv = load_inventory(write(tmp_path, GOOD))
    with pytest.raises(UnknownHostError, match=r"<7, 8>.*hosts\.toml") as err:
        inv.select([1001, 7, 8])
    assert err.value.code == 7005 and err.value.host_ids == [7, 8]


@pytest.mark.parametrize(
    "text, fragment",
    [
        pytest.param(GOOD.replace("2201", "70000"), "host #1 (id=1001): field 'ssh_port'", id="port-range"),
        pytest.param(
            GOOD.replace('"10.0.0.11"', '"10.0.0.11; touch /tmp/x"'), "field 'address'", id="address-injection"
        ),
        pytest.param(
            GOOD.replace('"/home/admin/ocp_agent"', '"/home/admin/../etc"'), "field 'agent_home'", id="path-traversal"
        ),
        pytest.param(GOOD.replace('user = "admin"', 'user = "ad min"'), "field 'user'", id="user"),
        pytest.param(
            GOOD.replace("id = 1002", "id = 1001"),
            "host #2 (id=1001): field 'id': 1001 is already used",
            id="duplicate-id",
        ),
        pytest.param(
            GOOD.replace('name = "obs-zone1-2"\n', ""),
            "host #2 (id=1002): field 'name': Field required",
            id="missing-name",
        ),
        pytest.param(GOOD.replace("ssh_port = 2201", "sshport = 2201"), "field 'sshport': Extra inputs", id="typo"),
        pytest.param(GOOD + "\n[[hosts]\n", "not valid TOML", id="toml-syntax"),
        pytest.param("[defaults]\nuser='a'\n", "no hosts", id="no-hosts"),
    ],
)
def test_errors_name_file_host_and_field(tmp_path, text, fragment):
    """A malformed inventory fails with the file, the host and the field in one message."""
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    assert str(path) in err.value.message and fragment in err.value.message


def test_missing_file_is_named(tmp_path):
    """A missing file is an InventoryError with its path."""
    with pytest.raises(InventoryError, match="not found"):
        load_inventory(tmp_path / "nope.toml")
