"""Sensor and actuator drivers of the nodes; import the one you need, nothing is loaded here.

Every driver takes a bus or pin the board layer (the HAL) made, never builds one, and does no
I/O at import time::

    from drivers.bh1750 import BH1750
    light = BH1750(i2c)                   # i2c = machine.I2C(0, ...) made by the HAL

==============  ==========================================================
module          part
==============  ==========================================================
errors          SensorError, NoDevice, ChecksumError, SensorTimeout
a02yyuw         DFRobot A02YYUW ultrasonic range (UART frames)
hcsr04          HC-SR04 ultrasonic range (trig/echo pins, time_pulse_us)
hx711           HX711 load-cell ADC (bit-banged clock/data pins)
ds18b20         DS18B20 temperature (OneWire bus)
mfrc522         MFRC522 / RC522 RFID reader (SPI + CS pin): card UID
bh1750          BH1750 ambient light (I2C)
ina219          INA219 bus voltage, current, power (I2C)
pir             PIR motion input (pin IRQ -> flag -> task)
dimmer          PWM lamp dimming, perceptual curve, ramps
gm65            GM65-class QR-code scanner (UART lines)
statusled       RGB status LED: colours and blink patterns
buzzer          PWM buzzer tone patterns
==============  ==========================================================
"""
