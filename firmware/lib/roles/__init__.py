"""The node roles (issue 3): what a bin, a streetlight and a pet scanner measure, decide and send.

Each role is two layers, so the decisions can be tested on MicroPython without hardware:

======================  ========================================================================
``settings``            every role's settings: defaults, checks at boot (then unloaded)
``common``              shared helpers: deadband reporting, latches, rounding, JSON files on flash
``bin_core``            bin logic: fill, weight, lid, temperature, tilt -> telemetry and events
``bin``                 bin glue: drivers, wake reason, deposit session, deep sleep
``streetlight_core``    lamp logic: dusk/dawn, profile, motion boost, battery, faults, energy
``lampcmd``             the streetlight's commands (loaded when one arrives, then dropped)
``streetlight``         streetlight glue: BH1750, PIR, INA219, dimmer, commands
``petscan_core``        scanner logic: tag check, answer/queued indication, fouling button
``petscan``             petscan glue: GM65, RGB LED, buzzer, button, ``pet.status``
======================  ========================================================================

A core takes explicit inputs (readings and the current time) and returns what to report
(telemetry of changed values, events) and what to set (lamp level, LED, buzzer); it never
touches hardware, the clock or the network. The glue classes implement the node runtime's
role interface (``node.role``). Payload keys are exactly those of docs/protocol.md section 8.
Nothing is imported here.
"""
