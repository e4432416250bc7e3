"""Writing the MicroPython image with esptool, after checking it fits the board.

Two checks, each refusing with :class:`~linli.flash.errors.WrongBoard`: the image's chip (the
chip id in its extended header, as esptool's ``image-info`` reads it) must be the board profile's
chip, before anything is touched; and the chip that answers on the port must be too, before
anything is written. The image goes where the chip's ROM looks for the bootloader (0x1000 on an
ESP32, 0x0 on an S3/C3): micropython.org's downloads are merged images that start there::

    img = read_image("ESP32_GENERIC-v1.24.bin")     # Image(chip='ESP32', offset=0x1000, ...)
    command(img, "/dev/ttyUSB0")                     # the esptool command it amounts to
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from linli.flash.errors import NoAnswer, PlanError, WrongBoard

_CHIP_ID_AT = 12  # common header (8 bytes) + wp pin + 3 drive bytes: then the 16-bit chip id


@dataclass(frozen=True)
class Image:
    path: Path
    chip: str  # esptool's CHIP_NAME, e.g. "ESP32-S3" (the board profiles use the same names)
    offset: int
    size: int


def read_image(path: str | Path) -> Image:
    """The image's chip and flash offset, from its header; PlanError if it is not an ESP image."""
    from esptool.bin_image import LoadFirmwareImage
    from esptool.loader import ESPLoader
    from esptool.targets import ROM_LIST
    from esptool.util import FatalError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlanError(str(path), "cannot read the image: %s" % exc.strerror) from None
    if len(data) < 24 or data[0] != ESPLoader.ESP_IMAGE_MAGIC:
        raise PlanError(str(path), "not an ESP32 firmware image (no 0x%02X magic byte): download the board's "
                                   ".bin from micropython.org/download" % ESPLoader.ESP_IMAGE_MAGIC)
    chip_id = int.from_bytes(data[_CHIP_ID_AT:_CHIP_ID_AT + 2], "little")
    rom = next((r for r in ROM_LIST if getattr(r, "IMAGE_CHIP_ID", None) == chip_id and r.CHIP_NAME != "ESP8266"), None)
    if rom is None:
        raise PlanError(str(path), "unknown chip id %d in the image header: is it an ESP32 image?" % chip_id)
    try:
        LoadFirmwareImage(rom.CHIP_NAME.lower(), data)
    except (FatalError, ValueError, IndexError) as exc:
        raise PlanError(str(path), "the image is damaged (%s): download it again" % exc) from None
    return Image(path, rom.CHIP_NAME, rom.BOOTLOADER_FLASH_OFFSET, len(data))


def _norm(chip: str) -> str:
    return chip.upper().replace("-", "").replace("_", "")


def chip_in_uname(sysname: str, machine: str) -> Optional[str]:
    """The chip a running MicroPython names in ``os.uname()`` (None off an ESP32 or if unsaid).

    >>> chip_in_uname("esp32", "Generic ESP32S3 module with Octal-SPIRAM with ESP32S3")
    'ESP32S3'
    >>> chip_in_uname("linux", "x86_64") is None
    True
    """
    if sysname != "esp32" or " with " not in machine:
        return None
    return _norm(machine.rpartition(" with ")[2].strip())


def check_running(sysname: str, machine: str, port: str, board_id: str, board_chip: str) -> None:
    """WrongBoard when the MicroPython on the port runs on another chip than the profile's."""
    chip = chip_in_uname(sysname, machine)
    if chip is not None and chip != _norm(board_chip):
        raise WrongBoard(port, "the board on this port runs MicroPython for an %s (%r), but %s is an %s: pick the "
                               "right --board (linli hw list) or the right port" % (chip, machine, board_id, board_chip))


def check_for_board(img: Image, board_id: str, board_chip: str) -> None:
    if img.chip.upper() != board_chip.upper():
        raise WrongBoard(str(img.path), "is an %s image, but board %s has an %s: download the %s image"
                                        % (img.chip, board_id, board_chip, board_chip))


def command(img: Image, port: str, *, erase: bool = False) -> str:
    """The esptool command line this amounts to (for --dry-run and the docs)."""
    chip = img.chip.lower().replace("-", "")
    pre = "esptool --chip %s --port %s erase-flash && " % (chip, port) if erase else ""
    return "%sesptool --chip %s --port %s write-flash 0x%x %s" % (pre, chip, port, img.offset, img.path)


def write(img: Image, port: str, board_id: str, board_chip: str, *, erase: bool = False,
          detect: Optional[Callable] = None) -> str:
    """Write the image through the chip's ROM bootloader; returns the chip that answered.

    ``detect(port)`` connects and returns an esptool ``ESPLoader`` (default
    ``esptool.cmds.detect_chip``, which resets the board into its bootloader by DTR/RTS).
    """
    from esptool import cmds
    from esptool.util import FatalError
    from serial import SerialException

    check_for_board(img, board_id, board_chip)
    detect = detect or cmds.detect_chip
    try:
        esp = detect(port)
    except (FatalError, SerialException, OSError) as exc:
        raise NoAnswer(port, "the ESP32's ROM bootloader did not answer (%s): hold BOOT, tap EN/RST, release "
                             "BOOT, then run again" % exc) from None
    try:
        if esp.CHIP_NAME.upper() != board_chip.upper():
            raise WrongBoard(port, "the board on this port is an %s, but %s is an %s: pick the right --board "
                                   "(linli hw list) or the right port" % (esp.CHIP_NAME, board_id, board_chip))
        try:
            esp = cmds.run_stub(esp)
            cmds.attach_flash(esp)
            if erase:
                cmds.erase_flash(esp)
            cmds.write_flash(esp, [(img.offset, str(img.path))])
            cmds.reset_chip(esp, "hard-reset")
        except (FatalError, SerialException, OSError) as exc:
            raise NoAnswer(port, "esptool failed while writing the image (%s): run again, with another USB cable "
                                 "or port if it repeats" % exc) from None
        return esp.CHIP_NAME
    finally:
        try:
            esp._port.close()
        except Exception:  # noqa: BLE001  (already closed by esptool on some paths)
            pass
