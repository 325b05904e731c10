#!/usr/bin/env python3
"""DL/T 645-2007 electricity meters on one RS-485 bus behind a transparent
serial-to-TCP gateway, for the end-to-end tests.

    python3 dlt645_meter.py --port 18899 --meters meters.json

Each meter is the meter (slave) service of the PyPI `dlt645` library
(https://gitee.com/chen-dongyu123/dlt645, 3.x): its frame parser, checksum,
0x33 offset and BCD encoding answer the agent, not code of ours. The library
serves one meter per TCP server; a gateway has a bus of several, so this
script puts one library meter per address behind one library TCP server and
routes each request to the meter it addresses. A request for an address not
on the bus gets no answer at all, as on a real bus (the library's single
meter would answer it with an error frame).

The file maps each 12-digit nameplate address to its energy totals in kWh by
data identifier (8 hex digits, DI3 first as written in the standard):

    {"202311230001": {"00000000": 1234.56, "00010000": 1200.0}}

It is re-read (when it changed) on every request, so a test changes what the
meters say by rewriting it (write a temporary file, then rename it over). A
meter removed from the file stops answering. Prints "listening <port>" once
it accepts connections.
"""

import argparse
import json
import os
import sys
import time

from dlt645 import MeterServerService, TcpServer
from dlt645.common.transform import string_to_bcd


def wire_order(nameplate):
    """The six address bytes as sent, A0 first.

    The standard sends the address low byte first, and the nameplate prints
    it high byte first (A5..A0). The library's set_address takes its digit
    string in wire order (it does not reverse it), so a nameplate address is
    turned around byte-wise before it is given to the library.
    """
    return bytes(reversed(string_to_bcd(nameplate)))


def set_total(meter, di, kwh):
    """Sets an energy total through the library's set_00.

    The library keeps every energy total within +-799999.99 kWh (it treats
    the top bit as a sign for all of them; the standard has a sign only on the
    combined total), so set_00 refuses a forward total near the 999999.99
    wrap that the tests need. Only then is the library's data item set
    directly: the value still goes out through the library's own BCD
    encoding and framing.
    """
    if not meter.set_00(di, kwh):
        item = meter.get_data_item(di)
        if item is None:
            print(f"unknown data identifier {di:08x}", file=sys.stderr, flush=True)
            return
        item.value = kwh


class Bus:
    """The meters on the bus, rebuilt from the JSON file when it changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.meters = {}

    def refresh(self):
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        if stamp == self.stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return  # half-written: keep the old values, retry next request
        meters = {}
        for address, totals in doc.items():
            wire = wire_order(address)
            meter = self.meters.get(wire) or MeterServerService(None)
            meter.set_address(wire.hex())
            for di, kwh in totals.items():
                set_total(meter, int(di, 16), float(kwh))
            meters[wire] = meter
        self.meters = meters
        self.stamp = stamp

    def handle_request(self, frame):
        """Called by the library's TCP server for every whole frame received."""
        self.refresh()
        meter = self.meters.get(bytes(frame.addr))
        if meter is None:
            return None
        return meter.handle_request(frame)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--meters", required=True)
    args = ap.parse_args()
    bus = Bus(args.meters)
    bus.refresh()
    server = TcpServer("127.0.0.1", args.port, 1.0, bus)
    if not server.start():
        print(f"could not listen on {args.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"listening {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
