"""The web console: static pages under ``/ui`` that act only through the public REST API.

Why static files and no server-side rendering: the console must act with the signed-in token's
authority and nothing else. A page rendered by apiaryd would read the store with the server's
own rights and would have to re-implement every role check; a page that only calls the REST API
from the browser cannot show or do more than its token may (a viewer's replay is a 403 from the
API whatever the page shows). So this package is a directory of HTML, CSS and ES modules (no
build step, nothing fetched from the internet) plus :func:`install_console`, a small ASGI layer
that serves them before authentication (a browser cannot send a bearer token to open a page)
with a strict Content-Security-Policy. It imports nothing of Apiary: the layer sits in front of
the API, the pages talk to it over HTTP (the import contract in pyproject.toml holds it so).
"""

from apiary.ui.mount import CSP, PREFIX, ConsoleLayer, install_console

__all__ = ["CSP", "PREFIX", "ConsoleLayer", "install_console"]
