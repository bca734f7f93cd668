"""Echo agent over the http interface: POST /message echoes, GET /healthz answers 200.

The port comes from ``$PORT`` (the launcher sets it from ``spec.interface.port``) or ``--port``.
"""

import sys

from apiary.agent.http import serve

if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else None
    serve(lambda msg: msg.payload, port=port)
