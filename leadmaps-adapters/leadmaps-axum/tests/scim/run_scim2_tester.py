"""Runs scim2-tester (https://pypi.org/project/scim2-tester/) against a SCIM server.

Usage: python run_scim2_tester.py BASE_URL, with the bearer token in LEADMAPS_SCIM_TOKEN.
Prints one JSON list of results: status, title, resource type and reason of every check.
"""

import json
import os
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server

base_url = sys.argv[1]
token = os.environ["LEADMAPS_SCIM_TOKEN"]
client = SyncSCIMClient(
    httpx2.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
)
results = check_server(client)
print(
    json.dumps(
        [
            {
                "status": result.status.name,
                "title": result.title,
                "resource_type": result.resource_type,
                "reason": str(result.reason) if result.reason is not None else None,
            }
            for result in results
        ]
    )
)
