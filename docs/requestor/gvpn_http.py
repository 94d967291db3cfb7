#!/usr/bin/env python3
"""A two-node app on gvpn providers, as a yapapi requestor: one node serves
HTTP from the requestor's own image, the other fetches the page over the VPN
by the server's hostname. docs/requestor.md explains each part.

    python3 gvpn_http.py --image-hash SHA3_224 [--image-url URL] [--subnet-tag public]

The image (a GVMI, e.g. one made by gvmkit-build) needs /bin/sh and busybox
(httpd, wget); an Alpine-based image has both.
"""
import argparse
import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import List, Optional

from yapapi import Golem
from yapapi.payload import Payload, vm
from yapapi.props import inf
from yapapi.props.base import constraint, prop
from yapapi.services import Service, ServiceState

# What selects gvpn: the runtime name of its descriptor (docs/ya-runtime-gvpn.json)
# and the capability `gvpn-runtime offer-template` advertises.
RUNTIME_NAME = "gvpn"
CAPABILITIES = ["vpn"]
# The demand property the provider's ExeUnit reads the image from, for every
# runtime: it downloads it, checks the SHA3-224 and hands it to gvpn-runtime.
TASK_PACKAGE = "golem.srv.comp.task_package"

HTTP_PORT = 8080
SERVER_HOSTNAME = "web"
STARTING_TIMEOUT = timedelta(minutes=5)


@dataclass
class GvpnPayload(Payload):
    """The demand for gvpn. vm.repo() would demand golem.runtime.name=vm, so the
    constraints are gvpn's own; the image is named the way vm.repo() names it."""

    package_url: str = prop(TASK_PACKAGE)
    runtime: str = constraint(inf.INF_RUNTIME_NAME, default=RUNTIME_NAME)
    capabilities: List[str] = constraint(
        "golem.runtime.capabilities", default_factory=lambda: list(CAPABILITIES)
    )


async def gvpn_payload(image_hash: str, image_url: Optional[str]) -> GvpnPayload:
    # vm.repo() resolves the hash on the image registry (or checks a direct URL)
    # and returns "hash:sha3:<hash>:<url>", what the ExeUnit downloads.
    package = await vm.repo(image_hash=image_hash, image_url=image_url)
    return GvpnPayload(package_url=await package.resolve_url())


class HttpServer(Service):
    async def start(self):
        # Deploy (with the VPN) and Start, as every service does.
        async for script in super().start():
            yield script
        script = self._ctx.new_script(timeout=timedelta(seconds=30))
        script.run(
            "/bin/sh",
            "-c",
            f"mkdir -p /golem/work/www && echo hello from $(hostname) > /golem/work/www/index.html"
            f" && busybox httpd -p {HTTP_PORT} -h /golem/work/www",
        )
        yield script

    def get_deploy_args(self):
        args = super().get_deploy_args()
        args["hostname"] = SERVER_HOSTNAME
        return args


class HttpClient(Service):
    def __init__(self, server_ip: str, page: "asyncio.Future[str]"):
        super().__init__()
        self.server_ip = server_ip
        self.page = page

    def get_deploy_args(self):
        # Deploy's hosts reach the runtime with the VPN: gvpn writes them into the
        # payload's /etc/hosts, so the server is reachable by name.
        args = super().get_deploy_args()
        args["hosts"] = {SERVER_HOSTNAME: self.server_ip}
        return args

    async def run(self):
        script = self._ctx.new_script(timeout=timedelta(seconds=30))
        fetched = script.run(
            "/bin/sh", "-c", f"busybox wget -q -O - http://{SERVER_HOSTNAME}:{HTTP_PORT}/"
        )
        yield script
        self.page.set_result((await fetched).stdout)


async def wait_started(cluster, what: str):
    deadline = datetime.now() + STARTING_TIMEOUT
    while datetime.now() < deadline:
        if cluster.instances and all(i.state == ServiceState.running for i in cluster.instances):
            return
        await asyncio.sleep(3)
    raise RuntimeError(f"{what} did not start within {STARTING_TIMEOUT}")


async def main(args):
    payload = await gvpn_payload(args.image_hash, args.image_url)
    async with Golem(budget=args.budget, subnet_tag=args.subnet_tag) as golem:
        network = await golem.create_network("192.168.50.0/24")
        async with network:
            server = await golem.run_service(HttpServer, payload=payload, network=network)
            await wait_started(server, "the HTTP server")
            server_ip = server.instances[0].network_node.ip
            page = asyncio.get_running_loop().create_future()
            client = await golem.run_service(
                HttpClient,
                payload=payload,
                network=network,
                instance_params=[{"server_ip": server_ip, "page": page}],
            )
            text = await asyncio.wait_for(page, STARTING_TIMEOUT.total_seconds())
            print(f"the client fetched over the VPN: {text.strip()}")
            client.stop()
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-hash", required=True, help="SHA3-224 of the image (sha3sum -a 224)")
    parser.add_argument("--image-url", help="where providers download it (default: the image registry)")
    parser.add_argument("--subnet-tag", default="public")
    parser.add_argument("--budget", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
