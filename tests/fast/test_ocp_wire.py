"""What real OCP clients read and send (issue #12), without a server: the task detail and list shapes, Spring's
paging and sort, the host agent view, lenient-but-strict request values, OCP's access-key signature (checked
against a signer written from OCP's page and mcp-oceanbase), the users file, the login throttle and proxies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from deployments.auth import (
    LoginThrottle,
    SignedRequest,
    Users,
    UsersFileError,
    add_access_key,
    add_user,
    client_address,
    date_error,
    signature_matches,
    strings_to_sign,
    trusted_networks,
)
from deployments.remote import as_submitted
from flows import machine
from flows.models import BatchRestartRequest, SubtaskStatus, format_time, now
from flows.plan import build_plan
from flows.store import TaskStore
from flows.view import (
    basic_task_instance,
    creator,
    spring_page,
    spring_sort,
    task_instance,
    wrapped_task_instance,
)

# ---- task detail and list ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    with TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}") as s:
        yield s


def finish_everything(store: TaskStore, task_id: int) -> None:
    """Run every subtask of a task to SUCCESSFUL in plan order, then end the run, as a runner would (no hosts)."""
    for sub in store.load(task_id).subtasks:
        store.apply(machine.start_subtask(store.load(task_id), sub.id, format_time(now()), "sep"))
        store.apply(machine.finish_subtask(store.load(task_id), sub.id, SubtaskStatus.SUCCESSFUL, format_time(now())))
    store.apply(machine.end_run(store.load(task_id), format_time(now())))


class TestTaskDetail:
    def test_detail_has_the_documented_fields_and_no_context(self, store):
        """creator {id, name}, createTime, startTime, finishTime null while running, prohibitRollback, executor;
        subtasks with times null until they happen and an executor once started; no context."""
        task_id = store.create_task(build_plan([1, 2]), creator="alice", executor="10.0.0.1")
        wire = wrapped_task_instance(store.load(task_id)).to_wire()
        assert wire["creator"] == {"id": creator("alice").id, "name": "alice"} and "context" not in wire
        assert wire["finishTime"] is None and wire["createTime"] == wire["startTime"]
        assert wire["prohibitRollback"] is False and wire["executor"] == "10.0.0.1"
        sub = wire["subtasks"][0]
        assert sub["createTime"] == wire["createTime"] and sub["startTime"] is None and sub["executor"] is None
        assert {"finishTime", "runTime", "prohibitRollback", "seriesId", "nodeType", "parallelIdx"} <= set(sub)

    def test_the_post_answer_keeps_the_seed_shape(self, store):
        """task_instance (the POST's view) is unchanged: creator a string, context with host ids as strings."""
        task_id = store.create_task(build_plan([7]), creator="alice", executor="10.0.0.1")
        wire = task_instance(store.load(task_id)).to_wire()
        assert wire["creator"] == "alice" and wire["context"]["listMap"] == {"host_ids": ["7"]}
        assert "createTime" not in wire and "executor" not in wire["subtasks"][0]

    def test_the_cli_shows_a_server_task_in_the_post_shape(self, store):
        """run --server --json: the detail, turned back into the POST's shape, equals the local view."""
        task_id = store.create_task(build_plan([1, 2]), creator="alice", executor="10.0.0.1")
        record = store.load(task_id)
        local = task_instance(record).to_wire()
        assert as_submitted(wrapped_task_instance(record).to_wire(), local["context"]) == local

    def test_creator_ids_are_stable_and_exact_in_json(self):
        """The same name, the same id; below 2^53 so every JSON client reads it exactly."""
        assert creator("alice").id == creator("alice").id != creator("bob").id
        assert 0 < creator("alice").id < 2**53

    def test_list_items_and_finish_time(self, store):
        """BasicTaskInstance: creator {id, name}, finishTime once finished, subtasks {id, name, description,
        status, operation}."""
        task_id = store.create_task(build_plan([1]), creator="alice", executor="10.0.0.1")
        finish_everything(store, task_id)
        item = basic_task_instance(store.load(task_id)).to_wire()
        assert item["status"] == "SUCCESSFUL" and item["finishTime"] and item["creator"]["name"] == "alice"
        assert set(item["subtasks"][0]) == {"id", "name", "description", "status", "operation"}


class TestListQueries:
    def test_filters(self, store):
        """name (case-insensitive substring, % and _ literal), types, host (any subtask on it), statuses."""
        first = store.create_task(build_plan([1, 2]), creator="alice", executor="e")
        finish_everything(store, first)
        second = store.create_task(build_plan([3]), creator="bob", executor="e", name="Batch restart 100%_agents")
        assert store.task_ids(name="RESTART ocp")[0] == [first]
        assert store.task_ids(name="100%_")[0] == [second] and store.task_ids(name="0%x")[0] == []
        assert store.task_ids(host_id=2)[0] == [first] and store.task_ids(host_id=3)[0] == [second]
        assert store.task_ids(types=["SCHEDULED"]) == ([], 0)
        assert store.task_ids(statuses=["SUCCESSFUL"]) == ([first], 1)
        assert store.task_ids(creator="bob", statuses=["RUNNING"]) == ([second], 1)

    def test_order_and_pages(self, store):
        """Newest first by default; any sortable column either way; ties newest first; limit and offset."""
        ids = [store.create_task(build_plan([h]), creator="a", executor="e") for h in (1, 2, 3)]
        finish_everything(store, ids[1])
        assert store.task_ids()[0] == ids[::-1]
        assert store.task_ids(order=[("id", True)])[0] == ids
        assert store.task_ids(order=[("status", False)], limit=1, offset=2) == ([ids[0]], 3)  # RUNNING, newest first
        assert store.task_ids(order=[("status", False)], limit=1) == ([ids[1]], 3)  # SUCCESSFUL
        with pytest.raises(ValueError, match="cannot sort tasks by"):
            store.task_ids(order=[("password", True)])

    def test_load_many_keeps_the_order_asked(self, store):
        ids = [store.create_task(build_plan([h]), creator="a", executor="e") for h in (1, 2)]
        assert [r.task.id for r in store.load_many([ids[1], 999, ids[0]])] == [ids[1], ids[0]]


class TestSpringPaging:
    @pytest.mark.parametrize(
        "page, size, expected",
        [
            (1, 10, (1, 10)),
            (0, 10, (1, 10)),
            (-7, 10, (1, 10)),
            (3, 5000, (3, 2000)),
            (2, 0, (2, 10)),
            (1, -1, (1, 10)),
        ],
    )
    def test_odd_values_as_spring_answers_them(self, page, size, expected):
        """page <= 0 is the first page; size <= 0 the default 10; size > 2000 is 2000."""
        assert spring_page(page, size) == expected

    def test_sort_parameters(self):
        """Spring's sort: properties then an optional direction, any case; repeatable; unknown names refused."""
        fields = {"id": "id", "startTime": "start_time", "name": "name"}
        assert spring_sort(["id,desc"], fields) == [("id", False)]
        assert spring_sort(["startTime,name,ASC", "id"], fields) == [("start_time", True), ("name", True), ("id", True)]
        with pytest.raises(ValueError, match="cannot sort by password"):
            spring_sort(["password,asc"], fields)


# ---- request values ------------------------------------------------------------------------------------------


class TestRequestValues:
    def test_numeric_strings_are_host_ids(self):
        """["2"], as context.listMap.host_ids holds them, is read as OCP's JSON binding reads a Long."""
        assert BatchRestartRequest.model_validate({"hostIds": ["2", 3]}).host_ids == [2, 3]

    @pytest.mark.parametrize("value", ["02", "-2", "2.0", " 2", "", "two", True, None, [2]])
    def test_other_values_are_not(self, value):
        with pytest.raises(ValidationError, match="hostIds"):
            BatchRestartRequest.model_validate({"hostIds": [value]})

    def test_a_string_and_a_number_of_the_same_id_are_duplicates(self):
        with pytest.raises(ValidationError, match="duplicates"):
            BatchRestartRequest.model_validate({"hostIds": ["2", 2]})

    @pytest.mark.parametrize("value", [False, True, "5", "NaN"])
    def test_max_failed_percent_is_a_json_number_only(self, value):
        """A boolean is not 0 and a string is not a number (pydantic's lax mode would take both)."""
        with pytest.raises(ValidationError, match="maxFailedPercent"):
            BatchRestartRequest.model_validate({"hostIds": [1], "maxFailedPercent": value})


# ---- the access-key signature --------------------------------------------------------------------------------


def mcp_signature(secret: str, method: str, address: str, path: str, params: dict, date: str) -> str:
    """Sign as oceanbase/mcp-oceanbase's query_ocp_api does (md5payload "", application/json, x-ocp-origin)."""
    query = "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in sorted(params.items()))
    to_sign = "\n".join(
        [method, "", "application/json", date, address, "x-ocp-origin:from-mcp", path + (f"?{query}" if query else "")]
    )
    return base64.b64encode(hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def received(
    path="/api/v2/tasks/instances", query="", body=b"", date="Tue, 17 Jan 2023 03:36:01 GMT", method="GET"
) -> SignedRequest:
    return SignedRequest(
        method=method,
        path=path,
        query=query,
        body=body,
        content_type="application/json",
        date=date,
        host="ocp.example:8080",
        ocp_headers=(("x-ocp-origin", "from-mcp"),),
    )


class TestSignature:
    SECRET = "an-access-key-secret-0123"

    def test_mcp_oceanbases_signature_is_accepted(self):
        """Query parameters sorted and percent-encoded by the client; the same request as the server received it."""
        params = {"status": "RUNNING,FAILED", "name": "Batch restart", "size": 10}
        signature = mcp_signature(
            self.SECRET, "GET", "ocp.example:8080", "/api/v2/tasks/instances", params, "Tue, 17 Jan 2023 03:36:01 GMT"
        )
        sent = "size=10&status=RUNNING%2CFAILED&name=Batch%20restart"  # any order on the wire
        assert signature_matches(self.SECRET, signature, received(query=sent))
        assert not signature_matches(self.SECRET, signature, received(query=sent.replace("10", "11")))
        assert not signature_matches("another-secret-0123456", signature, received(query=sent))

    def test_a_body_is_signed_by_its_md5_in_hex_or_base64(self):
        """Md5Payload covers the body: hex or base64 of its MD5; an empty Md5Payload does not cover a body."""
        body = b'{"hostIds": [1001]}'
        digest = hashlib.md5(body).digest()
        for md5 in (digest.hex(), base64.b64encode(digest).decode(), ""):
            to_sign = "\n".join(
                [
                    "POST",
                    md5,
                    "application/json",
                    "Tue, 17 Jan 2023 03:36:01 GMT",
                    "ocp.example:8080",
                    "x-ocp-origin:from-mcp",
                    "/api/v2/compute/hosts/batchRestartAgents",
                ]
            )
            mac = hmac.new(self.SECRET.encode(), to_sign.encode(), hashlib.sha1)
            signature = base64.b64encode(mac.digest()).decode()
            request = received(path="/api/v2/compute/hosts/batchRestartAgents", body=body, method="POST")
            assert signature_matches(self.SECRET, signature, request) is bool(md5)

    def test_x_ocp_headers_are_lower_case_and_sorted(self):
        """Every x-ocp-* header, in lower case and name order; others are not signed."""
        request = SignedRequest(
            method="GET",
            path="/p",
            query="",
            body=b"",
            content_type="",
            date="d",
            host="h",
            ocp_headers=(("X-OCP-Zeta", "z"), ("accept", "*/*"), ("x-ocp-origin", " mcp ")),
        )
        assert strings_to_sign(request)[0] == "GET\n\n\nd\nh\nx-ocp-origin:mcp\nx-ocp-zeta:z\n/p"

    @pytest.mark.parametrize(
        "offset, refused",
        [
            (timedelta(0), False),
            (timedelta(minutes=-14), False),
            (timedelta(minutes=14), False),
            (timedelta(minutes=-20), True),
            (timedelta(minutes=16), True),
        ],
    )
    def test_the_date_must_be_within_15_minutes(self, offset, refused):
        clock = datetime(2023, 1, 17, 3, 36, 1, tzinfo=UTC)
        date = format_datetime(clock + offset, usegmt=True)
        assert (date_error(date, clock) is not None) is refused

    @pytest.mark.parametrize("date", ["", "yesterday", "2023-01-17T03:36:01Z"])
    def test_a_missing_or_malformed_date_is_refused_naming_the_format(self, date):
        assert "Date header" in date_error(date)


# ---- the users file ------------------------------------------------------------------------------------------


class TestUsersFile:
    def test_access_keys_survive_user_add_and_are_read(self, tmp_path):
        """A key made for a user is found by id; `user add` again keeps it; the file stays 0600."""
        path = tmp_path / "users.toml"
        add_user(path, "alice", "alice-pass-1", ["ADMIN"])
        key_id, secret = add_access_key(path, "alice")
        add_user(path, "alice", "alice-pass-2", ["HOST_VIEWER"])
        found = Users(path).access_key(key_id)
        assert found is not None and found.secret == secret and found.user.roles == ("HOST_VIEWER",)
        assert path.stat().st_mode & 0o777 == 0o600

    def test_a_key_for_an_unknown_user_is_refused_naming_it(self, tmp_path):
        path = tmp_path / "users.toml"
        add_user(path, "alice", "alice-pass-1", ["ADMIN"])
        with pytest.raises(UsersFileError, match="no user 'bob'.*alice"):
            add_access_key(path, "bob")

    def test_secrets_in_a_file_others_can_read_are_refused(self, tmp_path):
        path = tmp_path / "users.toml"
        add_user(path, "alice", "alice-pass-1", ["ADMIN"])
        add_access_key(path, "alice")
        os.chmod(path, 0o644)
        with pytest.raises(UsersFileError, match="0644.*chmod 600"):
            Users(path)

    def test_changes_are_picked_up_and_a_broken_file_keeps_the_last_good_one(self, tmp_path):
        """A running server sees a new key without a restart; a broken rewrite leaves the old users in place."""
        path = tmp_path / "users.toml"
        add_user(path, "alice", "alice-pass-1", ["ADMIN"])
        users = Users(path)
        key_id, _ = add_access_key(path, "alice")
        assert users.access_key(key_id) is not None
        text = path.read_text()
        path.write_text("not toml [")
        assert users.access_key(key_id) is not None and users.authenticate("alice", "alice-pass-1") is not None
        path.write_text(text.replace(key_id, "f" * 24))
        assert users.access_key(key_id) is None and users.access_key("f" * 24) is not None


# ---- login throttle and proxies -----------------------------------------------------------------------------


class TestThrottle:
    def test_keyed_by_user_and_client(self):
        """Failures of one (user, client) throttle that pair only."""
        throttle = LoginThrottle(limit=3)
        for _ in range(3):
            throttle.failed("alice", "10.0.0.1")
        assert throttle.retry_after("alice", "10.0.0.1") > 0
        assert throttle.retry_after("alice", "10.0.0.2") == 0 and throttle.retry_after("bob", "10.0.0.1") == 0

    def test_success_clears_the_counter(self):
        throttle = LoginThrottle(limit=3)
        throttle.failed("alice", "c")
        throttle.failed("alice", "c")
        throttle.succeeded("alice", "c")
        assert throttle.failed("alice", "c") == 2

    def test_made_up_names_cannot_fill_the_memory(self):
        throttle = LoginThrottle(limit=3, max_keys=100)
        for i in range(1000):
            throttle.failed(f"user-{i}", "c")
        assert len(throttle._failures) <= 100


class TestProxies:
    NETWORKS = trusted_networks("127.0.0.1, 10.1.0.0/16")

    def test_forwarded_for_is_ignored_from_an_untrusted_peer(self):
        assert client_address("192.0.2.9", ["203.0.113.5"], self.NETWORKS) == "192.0.2.9"

    def test_the_nearest_untrusted_hop_behind_trusted_proxies_is_the_client(self):
        """A client cannot choose its address by sending X-Forwarded-For itself: only what our proxies appended."""
        assert client_address("127.0.0.1", ["6.6.6.6, 203.0.113.5"], self.NETWORKS) == "203.0.113.5"
        assert client_address("127.0.0.1", ["203.0.113.5, 10.1.2.3"], self.NETWORKS) == "203.0.113.5"
        assert client_address("127.0.0.1", [], self.NETWORKS) == "127.0.0.1"

    def test_no_trusted_proxies_by_default_and_bad_entries_named(self):
        assert trusted_networks("") == ()
        with pytest.raises(UsersFileError, match="'10.0.0.300' is not an IP address"):
            trusted_networks("10.0.0.1,10.0.0.300")
