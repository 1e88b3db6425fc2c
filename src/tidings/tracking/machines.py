"""Telling machines from people at the tracking endpoints.

Opens: Apple Mail Privacy Protection fetches every image through Apple's proxies when the mail
arrives, read or not, with a bare ``Mozilla/5.0`` user agent from Apple's networks; security
gateways and link scanners announce themselves in their user agents. Those opens are recorded
but flagged. Image proxies that fetch only when a person opens the mail (Gmail's, Yahoo's) are
people. Clicks: a scanner follows every link of a message within seconds of its delivery, so a
click sooner than ``scanner_seconds`` after sending is flagged too (decided where the delivery's
send time is known, when events are recorded).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

_SCANNERS = re.compile(
    r"bot\b|crawler|spider|scanner|preview|barracuda|mimecast|proofpoint|symantec|messagelabs|"
    r"trendmicro|fortinet|sophos|forcepoint|cisco|safelinks|python-|curl/|wget/|go-http-client|"
    r"okhttp|java/|headless|phantomjs|libwww|httpclient|axios|node-fetch",
    re.IGNORECASE,
)
APPLE_PROXY_AGENT = "Mozilla/5.0"
DEFAULT_MACHINE_NETWORKS = ("17.0.0.0/8",)  # Apple's own network, where its mail proxies run


@functools.lru_cache(maxsize=4096)  # a few mail clients' agents make most of the traffic
def is_machine_agent(user_agent: str | None) -> bool:
    """Whether a user agent is Apple's privacy proxy, a scanner or an HTTP library (also for
    providers' open and click events, which report the agent but not always a verdict)."""
    agent = (user_agent or "").strip()
    return agent == APPLE_PROXY_AGENT or bool(_SCANNERS.search(agent))


class MachineDetector:
    def __init__(self, networks: Iterable[str] = DEFAULT_MACHINE_NETWORKS) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        # Per detector (its networks), bounded: the same clients come back again and again.
        self._in_machine_network = functools.lru_cache(maxsize=65_536)(self._look_up_network)

    def is_machine(self, user_agent: str | None, client_ip: str | None) -> bool:
        """A request with no user agent at all is a program's, not a mail client's."""
        if not (user_agent or "").strip() or is_machine_agent(user_agent):
            return True
        return self._in_machine_network(client_ip)

    def _look_up_network(self, client_ip: str | None) -> bool:
        if not client_ip or not self._networks:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)
