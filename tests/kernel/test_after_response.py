"""Work a view leaves for after its response: done when the server closes the response
(after sending its last byte), at once outside a request, and never lost to an error."""

import logging

import pytest
from django.http import HttpResponse, StreamingHttpResponse
from django.test import RequestFactory

from contextos.after_response import after_response
from contextos.middleware import AfterResponseMiddleware


def answered(view) -> HttpResponse:
    return AfterResponseMiddleware(view)(RequestFactory().get("/"))


def test_the_work_is_done_once_the_response_is_closed():
    done = []

    def view(request):
        after_response(lambda: done.append("first"))
        after_response(lambda: done.append("second"))
        return HttpResponse("ok")

    response = answered(view)
    assert done == []  # the response is ready to send; the work waits
    response.close()  # as the server does once the last byte is out
    assert done == ["first", "second"]


def test_outside_a_request_the_work_is_done_at_once():
    done = []
    after_response(lambda: done.append("now"))
    assert done == ["now"]


def test_a_streams_work_after_the_view_returned_is_done_at_once():
    done = []

    def chunks():
        yield b"a"
        after_response(lambda: done.append("during the stream"))
        yield b"b"

    response = answered(lambda request: StreamingHttpResponse(chunks()))
    assert b"".join(response.streaming_content) == b"ab"
    assert done == ["during the stream"]


def test_a_view_that_fails_still_has_its_work_done():
    done = []

    def view(request):
        after_response(lambda: done.append("released"))
        raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        answered(view)
    assert done == ["released"]


def test_a_failing_work_is_logged_and_the_rest_is_done(caplog):
    done = []

    def fail():
        raise ValueError("boom")

    def view(request):
        after_response(fail)
        after_response(lambda: done.append("next"))
        return HttpResponse("ok")

    with caplog.at_level(logging.ERROR, logger="contextos.after_response"):
        answered(view).close()
    assert done == ["next"]
    assert "Work after the response failed" in caplog.text
