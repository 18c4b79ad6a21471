"""A real Dagster UI for end-to-end tests: started on a free loopback port, driven over GraphQL."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""

_RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""

_LOGS = """
query Logs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { pipelineFailureError: error { message } }
      }
    }
  }
}
"""

_LOCATIONS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
}
"""


_LATEST = """
query Latest($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        description
        metadataEntries { label ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } }
      }
    }
  }
}
"""


@dataclass
class DagsterWeb:
    """GraphQL access to a running webserver."""

    url: str

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload: dict[str, Any] = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]  # type: ignore[no-any-return]

    def wait_until_loaded(self, timeout: float, log: Path | None = None) -> str:
        """Wait for the code location to load; return its name."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                data = self.graphql(_LOCATIONS)["workspaceOrError"]
                entries = data.get("locationEntries", [])
                last = entries
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    entry = entries[0]
                    if entry["locationOrLoadError"]["__typename"] == "PythonError":
                        raise AssertionError(f"code location failed to load: {entry['locationOrLoadError']}")
                    return str(entry["name"])
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        tail = log.read_text()[-3000:] if log and log.exists() else ""
        raise AssertionError(f"the Dagster UI did not load within {timeout}s: {last}\n{tail}")

    def launch(self, location: str, job: str, run_config: dict[str, Any]) -> str:
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job},
            "runConfigData": run_config,
        }
        result = self.graphql(_LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"launch failed: {result}")
        return str(result["run"]["runId"])

    def wait_for_run(self, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            status = self.graphql(_RUN, {"runId": run_id})["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                return str(status)
            time.sleep(1)
        raise AssertionError(f"run {run_id} still {status} after {timeout}s")

    def run_messages(self, run_id: str) -> list[str]:
        events = self.graphql(_LOGS, {"runId": run_id})["logsForRun"].get("events", [])
        messages = []
        for event in events:
            for text in (
                event.get("message"),
                (event.get("error") or {}).get("message"),
                (event.get("pipelineFailureError") or {}).get("message"),
            ):
                if text:
                    messages.append(str(text))
        return messages

    def latest_materialization(self, path: list[str]) -> dict[str, Any] | None:
        """The latest materialization of the asset at ``path``: runId, description, metadata by label."""
        asset = self.graphql(_LATEST, {"path": path})["assetOrError"]
        found = asset.get("assetMaterializations") or []
        if not found:
            return None
        latest = found[0]
        metadata = {e["label"]: e.get("intValue", e.get("text")) for e in latest["metadataEntries"]}
        return {"runId": latest["runId"], "description": latest["description"], "metadata": metadata}
