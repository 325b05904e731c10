#!/usr/bin/env python3
"""A Modbus TCP energy meter for the end-to-end tests: a real pymodbus (3.x)
server whose register values come from a JSON file.

    python3 modbus_meter.py --port 15020 --registers regs.json
    python3 modbus_meter.py --serial /tmp/x/meter-end --units 1,2 --registers regs.json

With --serial it serves Modbus RTU on a serial device (a socat pty pair's
end, in the tests) at 9600 8N1 instead of TCP, answering as each unit id in
--units. The units share the register file at offsets of 1000: the first
unit listed reads addresses as they are, the second reads address A from
the file's A + 1000, the third from A + 2000, so a read sent to the wrong
unit id gets the wrong value (or an illegal-address exception).

The file maps each table to {address: value} with 16-bit values:

    {"holding": {"0": 4660, "1": 22136}, "input": {"10": 1}}

It is re-read (when it changed) on every request, so a test changes what the
meter says by rewriting the file (write a temporary file, then rename it over,
so a request never sees half a file). A request for an address the file does
not list gets an "illegal data address" exception, as a real meter would
answer. Prints "listening <port>" once it accepts connections.

pymodbus reshaped its server datastore during 3.x: recent releases build a
server from SimDevice objects whose `action` hook sees every request; older
ones ask a device context for values. Both are supported (checked with 3.0,
3.6, 3.9, 3.11 and 3.16); with 3.9 to 3.11, whose context cannot refuse a
read, an address the file stops listing keeps its last value.
"""

import argparse
import asyncio
import json
import logging
import os
import socket
import sys

import pymodbus

HOLDING_CODES = {3, 6, 16, 22, 23}
INPUT_CODES = {4}
# Registers the legacy datastore allocates; the file may only use these.
LEGACY_SIZE = 4096


class Registers:
    """The JSON file's values, reloaded when the file changes."""

    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.tables = {"holding": {}, "input": {}}
        self.refresh()

    def refresh(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            tables = {
                name: {int(a): int(v) & 0xFFFF for a, v in raw.get(name, {}).items()}
                for name in ("holding", "input")
            }
        except (OSError, ValueError, AttributeError) as e:
            # Keep the last good values; the test renames whole files into place.
            print(f"ignoring unreadable register file: {e}", file=sys.stderr, flush=True)
            return
        self.tables = tables
        self.stamp = stamp

    @staticmethod
    def table_of(func_code):
        if func_code in HOLDING_CODES:
            return "holding"
        if func_code in INPUT_CODES:
            return "input"
        return None


def new_api_context(regs, units=(0,)):
    """pymodbus >= 3.10: one shared register block, filled per request by `action`.

    Unit id 0 answers for every unit (TCP); on a serial bus each listed unit
    id is a device of its own."""
    from pymodbus.constants import ExcCodes
    from pymodbus.simulator import DataType, SimData, SimDevice

    def action_at(offset):
        async def action(func_code, start_address, address, count, registers, set_values):
            regs.refresh()
            table = Registers.table_of(func_code)
            if table is None or set_values is not None:
                return ExcCodes.ILLEGAL_FUNCTION
            values = regs.tables[table]
            for a in range(address, address + count):
                if a + offset not in values:
                    return ExcCodes.ILLEGAL_ADDRESS
                registers[a - start_address] = values[a + offset]
            return None

        return action

    devices = [
        SimDevice(
            id=unit,
            simdata=[SimData(address=0, count=65535, values=0, datatype=DataType.REGISTERS)],
            action=action_at(1000 * i),
        )
        for i, unit in enumerate(units)
    ]
    return devices[0] if len(devices) == 1 else devices


def legacy_context(regs):
    """pymodbus < 3.10: a device context that copies the file in before each read."""
    from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext

    try:
        from pymodbus.datastore import ModbusDeviceContext as Base
    except ImportError:
        from pymodbus.datastore import ModbusSlaveContext as Base

    class FileContext(Base):
        def _load(self, func_code, address, count):
            regs.refresh()
            table = Registers.table_of(func_code)
            if table is None:
                return False
            values = regs.tables[table]
            wanted = range(address, address + count)
            if any(a not in values for a in wanted):
                return False
            # setValues applies the same address offset as getValues, so the
            # file's addresses are the ones on the wire in every 3.x version.
            Base.setValues(self, func_code, address, [values[a] for a in wanted])
            return True

        # Up to 3.8 the server asks validate() first (a False answer is an
        # illegal-address exception); from 3.9 it only calls getValues().
        def validate(self, func_code, address, count=1):
            return self._load(func_code, address, count) and Base.validate(self, func_code, address, count)

        def getValues(self, func_code, address, count=1):
            self._load(func_code, address, count)
            return Base.getValues(self, func_code, address, count)

    blocks = {k: ModbusSequentialDataBlock(0, [0] * LEGACY_SIZE) for k in ("di", "co", "hr", "ir")}
    try:
        device = FileContext(zero_mode=True, **blocks)
    except TypeError:
        device = FileContext(**blocks)
    try:
        return ModbusServerContext(devices=device, single=True)
    except TypeError:
        return ModbusServerContext(slaves=device, single=True)


def make_context(regs, units=(0,)):
    try:
        from pymodbus.simulator import SimDevice

        if "action" in getattr(SimDevice, "__dataclass_fields__", {}):
            return new_api_context(regs, units)
    except ImportError:
        pass
    return legacy_context(regs)


async def announce_when_listening(port):
    """Prints the ready line once the port accepts a connection."""
    loop = asyncio.get_running_loop()
    while True:
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 1.0)
            print(f"listening {port}", flush=True)
            return
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)
        finally:
            s.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, help="TCP port (Modbus TCP)")
    ap.add_argument("--serial", help="serial device (Modbus RTU, 9600 8N1: a pty refuses a parity bit)")
    ap.add_argument("--units", default="1", help="unit ids answered on --serial, comma-separated")
    ap.add_argument("--registers", required=True, help="JSON file of register values")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    print(f"pymodbus {pymodbus.__version__}", file=sys.stderr, flush=True)

    if args.serial:
        from pymodbus import FramerType
        from pymodbus.server import ModbusSerialServer

        units = [int(u) for u in args.units.split(",")]
        server = ModbusSerialServer(
            make_context(Registers(args.registers), units),
            framer=FramerType.RTU,
            port=args.serial,
            baudrate=9600,
            bytesize=8,
            parity="N",
            stopbits=1,
        )
        await server.serve_forever(background=True)
        print(f"listening {args.serial}", flush=True)
        await server.serving
        return

    from pymodbus.server import StartAsyncTcpServer

    context = make_context(Registers(args.registers))
    announcer = asyncio.create_task(announce_when_listening(args.port))
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", args.port))
    announcer.cancel()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
