"""A callback is sent to the address that was checked, never to a second DNS answer."""

from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from backprop.urls import pinned_request, resolve


def test_the_request_goes_to_the_address_and_keeps_the_host_name():
    request = pinned_request("https://hooks.example:8443/in?x=1", "93.184.216.34", content=b"{}")
    assert str(request.url) == "https://93.184.216.34:8443/in?x=1"
    assert request.headers["Host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"  # TLS name and certificate
    six = pinned_request("http://[2001:db8::1]/", "2001:db8::1")
    assert six.url.host == "2001:db8::1" and six.headers["Host"] == "[2001:db8::1]"
    assert "sni_hostname" not in six.extensions
    basic = pinned_request("http://ann:p%40ss@hooks.example/", "93.184.216.34")
    assert basic.headers["Authorization"] == "Basic " + base64.b64encode(b"ann:p@ss").decode()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.server.hosts.append(self.headers["Host"])
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    server.hosts = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_a_name_that_resolves_elsewhere_after_the_check_is_not_looked_up_again(
    receiver, monkeypatch
):
    # a rebinding name: the check sees the receiver, every later lookup a blackhole
    real, answers = socket.getaddrinfo, []

    def lookup(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        answers.append(host)
        address = "127.0.0.1" if len(answers) == 1 else "10.255.255.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    url = f"http://rebind.test:{receiver.server_port}/hook"
    address, why = resolve(url, allow_private=True)
    assert (address, why) == ("127.0.0.1", None)
    with httpx.Client(timeout=5) as http:
        answer = http.send(pinned_request(url, address, content=b"{}"))
    assert answer.status_code == 204
    assert receiver.hosts == [f"rebind.test:{receiver.server_port}"]
    assert answers == ["rebind.test"]  # one lookup: the one that was checked
    with pytest.raises(httpx.TransportError):  # what a second lookup would have reached
        httpx.post(url, content=b"{}", timeout=1)
