#!/usr/bin/env python3
"""DL/T 645-2007 electricity meters on one RS-485 bus behind a transparent
serial-to-TCP gateway, for the end-to-end tests.

    python3 dlt645_meter.py --port 18899 --meters meters.json
    python3 dlt645_meter.py --serial /tmp/x/meter-end --meters meters.json

With --serial the bus is on a serial device (a socat pty pair's end, in the
tests) at 2400 8N1 (a pty refuses a parity bit: tcsetattr fails with EINVAL), served by the library's own RTU (serial) server instead
of its TCP server.

DL/T 645-1997 meters: the library speaks only the 2007 edition, so a 1997
read (control 0x01, a two-byte data identifier such as 9010) is answered
here — 0x81 with the identifier and the total as four BCD bytes — but framed
by the library's own encoder (address, 0x33 offset, checksum). A meter's
1997 totals are keyed by 4 hex digits in the file: {"199700000001": {"9010": 12.5}}.

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
from dlt645.protocol.protocol import DLT645Protocol


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
        # Wire address -> {two-byte data identifier: kWh} of 1997 meters.
        self.meters_1997 = {}

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
        meters_1997 = {}
        for address, totals in doc.items():
            wire = wire_order(address)
            old = {di: kwh for di, kwh in totals.items() if len(di) == 4}
            if old:
                meters_1997[wire] = {int(di, 16): float(kwh) for di, kwh in old.items()}
            new = {di: kwh for di, kwh in totals.items() if len(di) == 8}
            if not new:
                continue
            meter = self.meters.get(wire) or MeterServerService(None)
            meter.set_address(wire.hex())
            for di, kwh in new.items():
                set_total(meter, int(di, 16), float(kwh))
            meters[wire] = meter
        self.meters = meters
        self.meters_1997 = meters_1997
        self.stamp = stamp

    def answer_1997(self, frame):
        """A DL/T 645-1997 read: 0x81, DI0 DI1, the total as XXXXXX.XX in BCD."""
        totals = self.meters_1997.get(bytes(frame.addr))
        if totals is None or len(frame.data) != 2:
            return None
        di = frame.data[0] | (frame.data[1] << 8)
        if di not in totals:
            # Error byte bit 1: data identifier wrong.
            return DLT645Protocol.build_frame(bytes(frame.addr), 0xC1, bytes([0x02]))
        digits = f"{round(totals[di] * 100):08d}"[-8:]
        value = bytes(int(digits[i : i + 2], 16) for i in (6, 4, 2, 0))
        return DLT645Protocol.build_frame(bytes(frame.addr), 0x81, bytes(frame.data[:2]) + value)

    def handle_request(self, frame):
        """Called by the library's TCP server for every whole frame received."""
        self.refresh()
        if frame.ctrl_code == 0x01:
            return self.answer_1997(frame)
        meter = self.meters.get(bytes(frame.addr))
        if meter is None:
            return None
        return meter.handle_request(frame)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, help="TCP port of the transparent gateway")
    ap.add_argument("--serial", help="serial device the bus is on (2400 8N1)")
    ap.add_argument("--meters", required=True)
    args = ap.parse_args()
    bus = Bus(args.meters)
    bus.refresh()
    if args.serial:
        import serial
        from dlt645.transport.server.rtu_server import RtuServer

        server = RtuServer(
            args.serial, baud_rate=2400, parity=serial.PARITY_NONE, timeout=1.0, service=bus
        )
        where = args.serial
    else:
        server = TcpServer("127.0.0.1", args.port, 1.0, bus)
        where = None
    if not server.start():
        print(f"could not open {args.serial or args.port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"listening {where or server.port}", flush=True)
    try:
        while server.is_running():
            time.sleep(0.2)
        print("bus closed", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
