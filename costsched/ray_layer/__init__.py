"""The Ray layer: everything that imports ``ray`` lives here.

Ray reads ``RAY_AUTH_MODE`` when it is first imported; a client joining a running
cluster needs ``token`` to present the cluster's token (``~/.ray/auth_token``).
Token authentication is Ray 2.60's default for clusters it starts, so this only
makes clients match; an explicit ``RAY_AUTH_MODE`` wins.
"""

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")
