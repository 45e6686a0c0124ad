"""A real strongSwan (charon) instance for the tests, isolated in its own directory.

INTEROP.md: charon-systemd as a plain foreground process, configured only by environment
(STRONGSWAN_CONF, SWANCTL_DIR) and a private vici socket; loopback addresses only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CHARON = shutil.which("charon-systemd") or "/usr/sbin/charon-systemd"
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"

CONF = """\
charon {{
  port = {port}
  port_nat_t = {port_nat}
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey kdf {kernel} socket-default vici {plugins}
{routes}{settings}  retransmit_tries = 2
  plugins {{
    vici {{
      socket = unix://{dir}/charon.vici
    }}
  }}
  filelog {{
    main {{
      path = {dir}/charon.log
      default = 1
      ike = 2
      flush_line = yes
    }}
  }}
}}
swanctl {{
  socket = unix://{dir}/charon.vici
}}
"""


# Without ESP in the kernel (INTEROP.md): no CHILD_SA can be installed, keep routes out.
HOST_KERNEL = ("kernel-netlink", "  install_routes = no\n  routing_table = 0\n")
# In a network namespace of its own: ESP in user space (libipsec, a TUN device) before
# kernel-netlink, and the routes to the remote TS that libipsec needs, in that namespace only.
NETNS_KERNEL = ("kernel-libipsec kernel-netlink", "")


class Charon:
    """charon-systemd in `home`; with `netns`, inside that network namespace (kernel-libipsec:
    CHILD_SAs are really installed there)."""

    def __init__(self, home: Path, port: int, netns: str | None = None, *, plugins: str = "",
                 settings: str = "") -> None:  # fmt: skip
        """``plugins``: more to load (e.g. "curl"); ``settings``: more lines of the charon
        section (e.g. "  hash_and_url = yes\n")."""
        if not os.path.exists(CHARON):
            raise AssertionError(
                "strongSwan is not installed: apt-get install strongswan-charon strongswan-swanctl charon-systemd"
            )
        self.home, self.port, self.netns = home, port, netns
        self.swanctl_dir = home / "swanctl"
        for sub in ("x509", "x509ca", "private", "conf.d"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        kernel, routes = NETNS_KERNEL if netns else HOST_KERNEL
        (home / "strongswan.conf").write_text(
            CONF.format(
                port=port,
                port_nat=port + 1,
                dir=home,
                kernel=kernel,
                routes=routes,
                plugins=plugins,
                settings=settings,
            )  # fmt: skip
        )
        self.env = {
            **os.environ,
            "STRONGSWAN_CONF": str(home / "strongswan.conf"),
            "SWANCTL_DIR": str(self.swanctl_dir),
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        # `ip netns exec` execs charon in its own place: self.proc.pid is charon's PID.
        argv = ["ip", "netns", "exec", self.netns, CHARON] if self.netns else [CHARON]
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not (self.home / "charon.vici").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"charon did not start: {self.log()[-2000:]}")
            time.sleep(0.05)

    def swanctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SWANCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def log(self) -> str:
        path = self.home / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
