"""Several pricestream servers behind nginx, for the tests: Debian's nginx running the repo's own
configuration (deploy/nginx/pricestream.conf, with only its ports and paths replaced) in a
temporary folder, in front of real server processes that a test may kill.

Everything listens on loopback. nginx connects to the servers from 127.0.0.1, which is the one
address the servers trust for X-Forwarded-For; a test that plays a client talking to a server
directly connects from another loopback address (`client`), which the servers do not trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.demo import DemoExchange
from tests.conftest import WAIT
from tests.system import debian_program, free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx" / "pricestream.conf"
# The address nginx connects to the servers from (the kernel's choice for a loopback peer).
NGINX_ADDRESS = "127.0.0.1"
# The operator's lines the tests replace: the listening port and the upstream servers.
_LISTEN = re.compile(r"^(\s*)listen 80;.*$", re.M)
_SERVER = re.compile(r"^(\s*)server \S+:\d+( [^;]*)?;.*\n", re.M)
# What Debian's /etc/nginx/nginx.conf puts around the sites it includes (less user, modules
# and mime types, which the site does not use), with every path in our own folder.
_MAIN = """\
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    gzip on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/pricestream.conf;
}}
"""


async def terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it is not gone within WAIT; returns once it has exited."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(WAIT):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def site_config(listen: int, servers: Sequence[int]) -> str:
    """deploy/nginx/pricestream.conf listening on loopback port `listen`, in front of the
    servers on loopback ports `servers` (each with the template's own server parameters)."""
    text = TEMPLATE.read_text()
    text, listens = _LISTEN.subn(rf"\1listen 127.0.0.1:{listen};", text)
    assert listens == 1, "the template should have one `listen 80;`"
    lines = list(_SERVER.finditer(text))
    assert lines, "the template's upstream block should list its servers"
    indent, params = lines[0].group(1), lines[0].group(2) or ""
    ours = "".join(f"{indent}server 127.0.0.1:{port}{params};\n" for port in servers)
    return text[: lines[0].start()] + ours + text[lines[-1].end() :]


@dataclass
class Nginx:
    """Debian's nginx in the foreground, its pid file and logs in `prefix`."""

    binary: str
    prefix: Path
    port: int
    proc: asyncio.subprocess.Process | None = None

    @classmethod
    async def make(cls, prefix: Path) -> Nginx:
        """An nginx on a free loopback port; Debian's package is installed first if missing
        (in a thread: apt-get may take minutes, and servers may share this loop)."""
        binary = await asyncio.to_thread(debian_program, "nginx", "nginx", search=("/usr/sbin",))
        return cls(binary, prefix, free_port())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    def write(self, servers: Sequence[int]) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        # nginx started as root runs its workers as nobody, who must reach the temp folders.
        self.prefix.chmod(0o755)
        (self.prefix / "pricestream.conf").write_text(site_config(self.port, servers))
        self.conf.write_text(_MAIN.format(prefix=self.prefix))

    def command(self, *args: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", self.log, *args]

    @property
    def log(self) -> str:
        return str(self.prefix / "error.log")

    async def check(self) -> None:
        """`nginx -t`: the configuration parses and every directive is accepted."""
        proc = await asyncio.create_subprocess_exec(
            *self.command("-t", "-q"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(WAIT):
            output, _ = await proc.communicate()
        assert proc.returncode == 0, output.decode()

    async def start(self) -> None:
        await self.check()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command("-g", "daemon off;"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(WAIT):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"nginx exited: {self.errors()}")
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                return

    async def stop(self) -> None:
        """Fast shutdown (SIGTERM: open streams are cut), then the process is gone."""
        if self.proc is not None:
            await terminate(self.proc)

    def errors(self) -> str:
        path = Path(self.log)
        return path.read_text() if path.exists() else ""


@dataclass
class ServerProcess:
    """One `python -m app` on a loopback port."""

    port: int
    proc: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def health(self) -> dict[str, Any]:
        """This server's /healthz, asked directly (not through nginx)."""
        async with httpx.AsyncClient(timeout=WAIT) as http:
            answer: dict[str, Any] = (await http.get(self.url + "/healthz")).json()
            return answer

    async def viewers(self) -> int:
        count: int = (await self.health())["viewers"]
        return count

    async def kill(self) -> None:
        """SIGKILL: no shutdown at all; the kernel closes its sockets."""
        self.proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(WAIT):
            await self.proc.wait()

    async def stop(self) -> None:
        await terminate(self.proc)


async def start_server(exchange: DemoExchange, folder: Path, *flags: str) -> ServerProcess:
    """A server process on the shared `exchange`, its data in `folder`, trusting
    X-Forwarded-For from nginx's address only; `flags` are added to the command line."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRICESTREAM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "--port",
        str(port),
        "--upstream",
        exchange.ws_url,
        "--rest",
        exchange.rest_url,
        "--data-dir",
        str(folder),
        "--forwarded-allow-ips",
        NGINX_ADDRESS,
        "--backoff-initial",
        "0.05",
        "--backoff-max",
        "0.5",
        "--log-level",
        "warning",
        *flags,
        env=env,
    )
    server = ServerProcess(port, proc)
    async with httpx.AsyncClient(timeout=1) as http, asyncio.timeout(WAIT * 2):
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"the server exited with {proc.returncode}")
            try:
                await http.get(server.url + "/healthz")
                return server
            except httpx.TransportError:
                await asyncio.sleep(0.05)


@dataclass
class Cluster:
    nginx: Nginx
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nginx.url

    async def server_with_viewers(self, count: int = 1) -> ServerProcess:
        """The one server holding `count` viewers, once exactly one does."""
        async with asyncio.timeout(WAIT):
            while True:
                alive = [s for s in self.servers if s.proc.returncode is None]
                holding = [s for s in alive if await s.viewers() == count]
                if len(holding) == 1:
                    return holding[0]
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def behind_nginx(
    exchange: DemoExchange, servers: int = 2, flags: Sequence[str] = ()
) -> AsyncIterator[Cluster]:
    """`servers` pricestream processes on `exchange`, behind nginx; all stopped, and their
    folders removed, at the end."""
    with tempfile.TemporaryDirectory(prefix="pricestream-nginx-") as folder:
        os.chmod(folder, 0o755)  # nginx's workers pass through it (see Nginx.write)
        cluster = Cluster(await Nginx.make(Path(folder) / "nginx"))
        try:
            started = await asyncio.gather(
                *(
                    start_server(exchange, Path(folder) / f"data-{n}", *flags)
                    for n in range(servers)
                ),
                return_exceptions=True,
            )
            cluster.servers = [s for s in started if isinstance(s, ServerProcess)]
            for failed in started:
                if isinstance(failed, BaseException):
                    raise failed
            cluster.nginx.write([s.port for s in cluster.servers])
            await cluster.nginx.start()
            yield cluster
        finally:
            await cluster.nginx.stop()
            for server in cluster.servers:
                await server.stop()


def client(address: str, **options: Any) -> httpx.AsyncClient:
    """An HTTP client whose connections come from loopback `address` (127.x.y.z)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, timeout=WAIT, **options)
