"""``apiaryctl``: the command-line client. It talks to ``apiaryd`` over HTTP only (via
:mod:`apiary.client`); each command lives in its own module under :mod:`apiary.ctl.commands`."""
