import datetime
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import drift_cli

import drift_framework as df

SERVED = """\
name: served
source: {plugin: simulator, shape: [96, 96], spacing_px: 10, noise: {kind: gaussian, snr: 2.0},
         drift: [{kind: linear, velocity_px_per_frame: [0.4, -0.3]}], seed: 3}
pipeline: classical
controller: {plugin: kalman}
actuator:
  plugin: simulated-stage
  limits: {max_step: 2.0, travel: 50.0}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`drift serve` in a subprocess on 127.0.0.1 (started and stopped by the test)."""

    def __init__(self, recipe: Path, port: int, *extra):
        self.args = [str(Path(sys.executable).with_name("drift")), "serve", str(recipe), "--port", str(port), *extra]
        self.port, self.proc = port, None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("serving PYRO:"), line + self.proc.stderr.read()
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    @property
    def uri(self):
        return f"PYRO:drift.microscope@127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path):
    (tmp_path / "served.yaml").write_text(SERVED)
    srv = Server(tmp_path / "served.yaml", _free_port()).start()
    yield srv
    srv.stop()


def _remote_recipe(tmp_path, uri, frames=25, retries=5):
    path = tmp_path / "remote.yaml"
    path.write_text(f"""\
name: remote
source: {{plugin: pyro5, uri: "{uri}", timeout_s: 5, retries: {retries}, backoff_s: 0.1}}
pipeline: classical
controller: {{plugin: kalman}}
actuator: {{plugin: pyro5, uri: "{uri}", timeout_s: 5, retries: {retries}, backoff_s: 0.1,
           limits: {{max_step: 2.0, travel: 50.0}}}}
run: {{frames: {frames}, output: {tmp_path / 'remote.h5'}}}
""")
    return path


def test_remote_closed_loop_matches_the_local_run(server, tmp_path):
    remote = df.run(_remote_recipe(tmp_path, server.uri))
    local_path = tmp_path / "local.yaml"
    local_path.write_text(SERVED + f"run: {{frames: 25, output: {tmp_path / 'local.h5'}}}\n")
    local = df.run(local_path)
    r, loc = df.read_run(remote.output), df.read_run(local.output)
    np.testing.assert_allclose(r.steps["offset"], loc.steps["offset"], atol=1e-9)
    np.testing.assert_allclose(r.steps["command"], loc.steps["command"], atol=1e-12)
    np.testing.assert_allclose(r.steps["true_offset"], loc.steps["true_offset"], atol=1e-12)
    assert remote.residual_rms_px == pytest.approx(local.residual_rms_px)


def test_server_restart_mid_run_loses_no_step_and_repeats_no_command(server, tmp_path):
    import drift_pyro5.client as client

    sent, reconnects = [], []
    real_move = client.RemoteActuator.move_by

    def move_by(self, command):
        real_move(self, command)
        sent.append(self.sent[-1])
        reconnects.append(self.reconnects)

    client.RemoteActuator.move_by = move_by
    result = {}
    try:
        t = threading.Thread(target=lambda: result.update(
            summary=df.run(_remote_recipe(tmp_path, server.uri, frames=400, retries=30))))
        t.start()
        deadline = time.time() + 60
        while len(sent) < 20 and time.time() < deadline:
            time.sleep(0.02)
        server.kill()                      # the microscope PC crashes mid-run …
        time.sleep(0.5)
        server.start()                     # … and comes back on the same port
        t.join(timeout=120)
    finally:
        client.RemoteActuator.move_by = real_move
    summary = result["summary"]
    run = df.read_run(summary.output)
    assert summary.stop_reason == "completed" and len(run) == 400
    np.testing.assert_array_equal(run.steps["index"], np.arange(400))   # the run's own index goes on …
    assert np.all(np.diff(run.steps["time_s"]) > 0)                     # … and so does its clock
    assert summary.session_breaks == 1                                  # the restart is recorded, not hidden
    restarted = [i for i, s in enumerate(run.steps["status"]) if s == df.Status.REFERENCE and i > 0]
    assert len(restarted) == 1 and 20 <= restarted[0] < 400              # a new reference where it restarted
    from drift_framework.report import report

    assert "restarted 1 time(s)" in report(summary.output, tmp_path / "report")["markdown"].read_text()
    assert max(reconnects) >= 1                            # the client really reconnected
    ids = [cid for cid, _ in sent]
    assert len(ids) == len(set(ids))                       # every command id once
    assert not any(r["duplicate"] for _, r in sent)


def test_unreachable_uri_is_one_clear_error(tmp_path):
    path = _remote_recipe(tmp_path, f"PYRO:drift.microscope@127.0.0.1:{_free_port()}", retries=1)
    out = drift_cli("run", str(path), "-q")
    assert out.returncode == 2
    assert "unreachable after 2 tries" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3  # the error line (retry warnings are logged at most once each)


def test_non_loopback_bind_is_refused_without_the_flag(tmp_path):
    (tmp_path / "served.yaml").write_text(SERVED)
    out = drift_cli("serve", str(tmp_path / "served.yaml"), "--host", "0.0.0.0", "--port", str(_free_port()))
    assert out.returncode == 2 and "--allow-remote" in out.stderr


def test_only_exposed_methods_are_reachable(server):
    import Pyro5.api
    import Pyro5.errors

    with Pyro5.api.Proxy(server.uri) as proxy:
        proxy._pyroSerializer = "msgpack"
        assert "stage" in proxy.info()["actuators"]
        with pytest.raises(AttributeError):
            _ = proxy._applied
        with pytest.raises(AttributeError):
            proxy._actuator("stage")


def test_server_enforces_its_own_limits(server):
    import Pyro5.api

    with Pyro5.api.Proxy(server.uri) as proxy:
        proxy._pyroSerializer = "msgpack"
        result = proxy.move_by("stage", [1e6, -1e6], "id-1")
        assert result["clipped"] and np.hypot(*result["sent"]) <= 2.0 + 1e-9
        again = proxy.move_by("stage", [1e6, -1e6], "id-1")
        assert again["duplicate"] and again["sent"] == result["sent"]


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    (tmp_path / "served.yaml").write_text(SERVED)
    srv = Server(tmp_path / "served.yaml", _free_port(), "--tls-cert", str(cert), "--tls-key", str(key)).start()
    try:
        code = ("import Pyro5.api; from Pyro5 import config; config.SSL = True; "
                f"config.SSL_CACERTS = {str(cert)!r}; p = Pyro5.api.Proxy({srv.uri!r}); p._pyroSerializer = 'msgpack'; "
                "print(sorted(p.info()['actuators'])); print(len(p.acquire()['data']))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "['stage']" in out.stdout and str(96 * 96 * 4) in out.stdout
        plain = subprocess.run([sys.executable, "-c", code.replace("config.SSL = True; ", "")], capture_output=True,
                               text=True, timeout=60)
        assert plain.returncode != 0  # a client without TLS cannot talk to a TLS server
    finally:
        srv.stop()


def _pki(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def save(name, cert, key):
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def builder(subject, issuer, key):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drift test CA")])
    ca = builder(ca_name, ca_name, ca_key).add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                                         critical=True).sign(ca_key, hashes.SHA256())
    save("ca", ca, ca_key)
    for name in ("server", "client"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        b = builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_name, key)
        if name == "server":
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        save(name, b.sign(ca_key, hashes.SHA256()), key)
    return {k: str(tmp_path / k) for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_mutual_tls_admits_only_clients_with_a_certificate(tmp_path):
    pki = _pki(tmp_path)
    (tmp_path / "served.yaml").write_text(SERVED)
    journal = tmp_path / "journal.jsonl"
    srv = Server(tmp_path / "served.yaml", _free_port(), "--tls-cert", pki["server.pem"], "--tls-key",
                 pki["server.key"], "--client-ca", pki["ca.pem"], "--journal", str(journal)).start()
    try:
        recipe = tmp_path / "remote.yaml"
        tls = f"tls_ca: {pki['ca.pem']}, tls_cert: {pki['client.pem']}, tls_key: {pki['client.key']}"
        recipe.write_text(f"name: mtls\nsource: {{plugin: pyro5, uri: '{srv.uri}', {tls}}}\npipeline: classical\n"
                          f"controller: {{plugin: kalman}}\nactuator: {{plugin: pyro5, uri: '{srv.uri}', {tls}, "
                          "limits: {max_step: 2.0, travel: 50.0}}\n"
                          f"run: {{frames: 12, output: {tmp_path / 'mtls.h5'}}}\n")
        out = drift_cli("run", str(recipe), "-q")
        assert out.returncode == 0, out.stdout + out.stderr
        moves = len(journal.read_text().splitlines())
        assert moves >= 8                                             # the authenticated client moved the stage
        code = ("import Pyro5.api; from Pyro5 import config; config.SSL = True; "
                f"config.SSL_CACERTS = {pki['ca.pem']!r}; p = Pyro5.api.Proxy({srv.uri!r}); "
                "p._pyroSerializer = 'msgpack'; p.move_by('stage', [0.1, 0.0], 'intruder')")
        intruder = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert intruder.returncode != 0                                # TLS without a client certificate: refused
        assert len(journal.read_text().splitlines()) == moves          # … and it never reached the hardware
    finally:
        srv.stop()
    assert "refused a client: TLS handshake failed" in srv.proc.stderr.read()


def test_serving_beyond_loopback_requires_client_authentication(tmp_path):
    (tmp_path / "served.yaml").write_text(SERVED)
    out = drift_cli("serve", str(tmp_path / "served.yaml"), "--host", "0.0.0.0", "--allow-remote",
                    "--port", str(_free_port()))
    assert out.returncode == 2 and "without client authentication" in out.stderr and "--client-ca" in out.stderr
    assert "Traceback" not in out.stderr
