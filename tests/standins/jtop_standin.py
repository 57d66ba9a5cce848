"""A stand-in for jetson-stats' ``jtop`` module, for testing the jtop monitor on machines that are not Jetsons.

It follows jetson-stats' documented client API (the ``jtop`` class docstrings in jetson-stats 4.x-7.x,
``jtop/jtop.py``; the 3.x shapes from ``jtop/jtop.py`` of jetson-stats 3.1):

- ``jtop(interval=1.0)``; ``start()`` raises ``JtopException("The jtop.service is not active. Please run:\\nsudo
  jtop --install-service")`` when the service is down; ``close()``; a context manager.
- ``ok(spin=False)`` returns True while running and re-raises the error its reader thread stored, e.g.
  ``JtopException("Lost connection with jtop server")`` once the service died.
- Properties (4.x+): ``temperature`` {name: {online, temp °C}} (offline: -256), ``power`` {rail: {name: {online,
  power mW, avg mW...}}, tot: {power mW, avg mW}}, ``cpu`` {total: {user, nice, system, idle %}, cpu: [...]}, ``gpu``
  {name: {type, status: {load %...}, freq: {cur kHz...}}}, ``memory`` {RAM: {tot, used, free... KB}, EMC: {cur kHz,
  val %...}}, ``nvpmodel`` (object with ``name``, or None), ``jetson_clocks`` (bool-like object, or None).
- ``stats``: the flat dict (``CPU1``.. % or 'OFF', ``RAM`` fraction, ``GPU`` %, ``Temp X`` °C, ``Power X`` and
  ``Power TOT`` mW, ``jetson_clocks`` 'ON'/'OFF', ``nvp model`` name).
- Flavour ``"3"``: jetson-stats 3.x shapes (``temperature`` {name: °C}, ``power`` (total {cur, avg}, rails {name:
  {cur, avg}}), ``gpu`` {val %}, no ``memory`` but ``ram``; ``stats`` with ``power cur``).
- Flavour ``"stats-only"``: the properties are missing (a version whose properties we do not know); only ``stats``.

The fake service is module state (:data:`SERVICE`): tests set its readings, take it down (:meth:`Service.die`) and
bring it back (:meth:`Service.revive`); a client connected before a death stays dead, as a real client's reader
thread does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

__version__ = "4.2.12-standin"


class JtopException(Exception):
    """jtop's one exception type (jtop.core.exceptions.JtopException)."""


@dataclass
class Readings:
    """What the fake board reports."""

    temps_c: dict = field(default_factory=lambda: {"CPU": 52.5, "GPU": 50.0, "SOC0": 49.0, "tj": 53.0})
    offline: tuple = ("PMIC",)
    rails_mw: dict = field(default_factory=lambda: {"VDD_GPU_SOC": 3600, "VDD_CPU_CV": 1200, "VIN_SYS_5V0": 3000})
    total_mw: int = 7800
    cores: tuple = (12.0, 30.0, "OFF", 18.0)
    idle_percent: float = 80.0
    gpu_load: float = 42.0
    gpu_freq_khz: int = 918000
    emc_freq_khz: int = 2133000
    ram_tot_kb: int = 7_620_000
    ram_used_kb: int = 3_500_000
    nvpmodel: str | None = "MAXN"
    jetson_clocks: bool | None = False


class Service:
    """The jtop.service as the client sees it."""

    def __init__(self):
        self.reset()

    def reset(self, flavour: str = "4") -> None:
        self.up = True
        self.generation = 0
        self.flavour = flavour
        self.readings = Readings()
        self.start_attempts = 0
        self.clients: list = []

    def die(self) -> None:
        self.up = False

    def revive(self) -> None:
        self.up = True
        self.generation += 1


SERVICE = Service()


class _NVPModel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


class _JetsonClocks:
    def __init__(self, enabled: bool):
        self._enabled = enabled

    def __bool__(self):
        return self._enabled


class jtop:  # lower-case, as the real class
    def __init__(self, interval: float = 1.0):
        self.interval_user = float(interval)
        self._running = False
        self._generation = None
        SERVICE.clients.append(self)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        SERVICE.start_attempts += 1
        if not SERVICE.up:
            raise JtopException("The jtop.service is not active. Please run:\nsudo jtop --install-service")
        self._generation = SERVICE.generation
        self._running = True

    def ok(self, spin: bool = False) -> bool:
        if self._running and (not SERVICE.up or SERVICE.generation != self._generation):
            self._running = False
            raise JtopException("Lost connection with jtop server")
        return self._running

    def close(self) -> None:
        self._running = False

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def interval(self) -> float:
        return self.interval_user

    def _r(self) -> Readings:
        return SERVICE.readings

    def __getattribute__(self, name):
        # The "stats-only" flavour hides every documented property but stats.
        if name in _PROPERTIES and SERVICE.flavour == "stats-only":
            raise AttributeError(name)
        if name == "memory" and SERVICE.flavour == "3":
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def temperature(self) -> dict:
        r = self._r()
        if SERVICE.flavour == "3":
            return dict(r.temps_c)
        temps = {name: {"online": True, "temp": value, "max": 105.0, "crit": 110.0} for name, value in r.temps_c.items()}
        temps.update({name: {"online": False, "temp": -256} for name in r.offline})
        return temps

    @property
    def power(self):
        r = self._r()
        if SERVICE.flavour == "3":
            return ({"cur": r.total_mw, "avg": r.total_mw}, {n: {"cur": p, "avg": p} for n, p in r.rails_mw.items()})
        rails = {n: {"online": True, "type": "INA3221", "volt": 5000, "curr": p // 5, "power": p, "avg": p}
                 for n, p in r.rails_mw.items()}
        return {"rail": rails, "tot": {"power": r.total_mw, "avg": r.total_mw}}

    @property
    def cpu(self) -> dict:
        r = self._r()
        idle = r.idle_percent
        cores = [{"online": c != "OFF", **({} if c == "OFF" else {"idle": 100.0 - c, "user": c})} for c in r.cores]
        return {"total": {"user": 100.0 - idle, "nice": 0.0, "system": 0.0, "idle": idle}, "cpu": cores}

    @property
    def gpu(self) -> dict:
        r = self._r()
        if SERVICE.flavour == "3":
            return {"val": r.gpu_load, "frq": r.gpu_freq_khz // 1000}
        return {"gpu": {"type": "integrated", "status": {"railgate": False, "3d_scaling": True, "load": r.gpu_load},
                        "freq": {"governor": "nvhost_podgov", "cur": r.gpu_freq_khz, "max": 1300500, "min": 306000}}}

    @property
    def memory(self) -> dict:
        r = self._r()
        return {"RAM": {"tot": r.ram_tot_kb, "used": r.ram_used_kb, "free": r.ram_tot_kb - r.ram_used_kb - 900_000,
                        "buffers": 100_000, "cached": 800_000, "shared": 200_000},
                "SWAP": {"tot": 3_800_000, "used": 0, "cached": 0, "table": {}},
                "EMC": {"online": True, "val": 12, "cur": r.emc_freq_khz, "max": 3199000, "min": 204000}}

    @property
    def ram(self) -> dict:  # jetson-stats 3.x
        r = self._r()
        return {"use": r.ram_used_kb, "tot": r.ram_tot_kb}

    @property
    def nvpmodel(self):
        name = self._r().nvpmodel
        return None if name is None else _NVPModel(name)

    @property
    def jetson_clocks(self):
        enabled = self._r().jetson_clocks
        return None if enabled is None else _JetsonClocks(enabled)

    @property
    def stats(self) -> dict:
        r = self._r()
        stats = {"time": datetime.now(), "uptime": timedelta(seconds=1234)}
        for i, c in enumerate(r.cores):
            stats[f"CPU{i + 1}"] = "OFF" if c == "OFF" else int(c)
        stats["RAM"] = r.ram_used_kb / r.ram_tot_kb
        stats["SWAP"] = 0.0
        stats["GPU"] = r.gpu_load
        for name, value in r.temps_c.items():
            stats[f"Temp {name}"] = value
        if SERVICE.flavour == "3":
            stats["power cur"], stats["power avg"] = r.total_mw, r.total_mw
        else:
            for name, p in r.rails_mw.items():
                stats[f"Power {name}"] = p
            stats["Power TOT"] = r.total_mw
        if r.jetson_clocks is not None:
            stats["jetson_clocks"] = "ON" if r.jetson_clocks else "OFF"
        if r.nvpmodel is not None:
            stats["nvp model"] = r.nvpmodel
        return stats


_PROPERTIES = {"temperature", "power", "cpu", "gpu", "memory", "ram", "nvpmodel", "jetson_clocks"}
