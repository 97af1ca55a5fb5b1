"""The documented wire shapes: request validation, envelopes, timestamps, trace ids."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from flows.models import ApiError, BatchRestartRequest, Envelope, ErrorEnvelope, format_time, new_trace_id


class TestRequest:
    def test_accepts_both_spellings(self):
        """hostIds (the table) and hostids (the seed's sample) are the same field."""
        assert BatchRestartRequest.model_validate({"hostIds": [1, 2]}).host_ids == [1, 2]
        assert BatchRestartRequest.model_validate({"hostids": [2]}).host_ids == [2]

    @pytest.mark.parametrize(
        "body, fragment",
        [
            pytest.param({}, "Field required", id="missing"),
            pytest.param({"hostIds": []}, "must not be empty", id="empty"),
            pytest.param({"hostIds": ["a"]}, "valid integer", id="string"),  # #12: numeric strings are accepted
            pytest.param({"hostIds": [1.5]}, "valid integer", id="float"),
            pytest.param({"hostIds": [True]}, "valid integer", id="bool"),
            pytest.param({"hostIds": [-3]}, "positive", id="negative"),
            pytest.param({"hostIds": [2**53]}, "2^53-1", id="too-large"),
            pytest.param({"hostIds": [4, 4]}, "duplicates [4]", id="duplicate"),
            pytest.param({"hostIds": list(range(1, 2002))}, "at most 2000", id="oversized"),
            pytest.param({"hostIds": "1,2"}, "valid list", id="not-a-list"),
        ],
    )
    def test_rejects_bad_host_ids(self, body, fragment):
        """Each invalid body fails validation with a message naming the problem."""
        with pytest.raises(ValidationError, match=re.escape(fragment)):
            BatchRestartRequest.model_validate(body)


class TestEnvelope:
    def test_timestamps_have_milliseconds_and_offset(self):
        """2021-09-03T14:20:26.243+08:00, as in the seed."""
        when = datetime(2021, 9, 3, 14, 20, 26, 243000, tzinfo=timezone(timedelta(hours=8)))
        assert format_time(when) == "2021-09-03T14:20:26.243+08:00"

    def test_trace_ids_are_16_lowercase_hex(self):
        """traceId like 135b61d1965d4be3."""
        assert all(re.fullmatch(r"[0-9a-f]{16}", new_trace_id()) for _ in range(100))

    def test_success_envelope_field_names(self):
        """data, successful, timestamp, duration, status, traceId, server — nothing else."""
        env = Envelope[dict](
            data={}, timestamp=datetime.now().astimezone(), duration=5, trace_id="0" * 16, server="1.2.3.4"
        )
        assert sorted(env.to_wire()) == sorted(
            ["data", "successful", "timestamp", "duration", "status", "traceId", "server"]
        )

    def test_error_envelope_shape(self):
        """successful false and error{code, message}."""
        env = ErrorEnvelope(
            timestamp=datetime.now().astimezone(),
            duration=1,
            status=404,
            trace_id="0" * 16,
            server="h",
            error=ApiError(code=7005, message="The host <9> does not exist"),
        )
        wire = env.to_wire()
        assert wire["successful"] is False and wire["error"] == {"code": 7005, "message": "The host <9> does not exist"}
