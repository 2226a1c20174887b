"""Residency at an AWS site: the real API server's ValidatingAdmissionPolicy."""

from __future__ import annotations

import uuid

from fedlab import Federation


def _pod(namespace: str, site: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"residency-{uuid.uuid4().hex[:6]}", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"gpufleet.io/site": site},
            "containers": [{"name": "main", "image": "busybox", "command": ["true"],
                            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
                                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}],
        },
    }


def test_aws_site_refuses_a_regulated_pod_and_admits_a_general_one(federation: Federation):
    aws = federation.sites["aws-euc1"]
    status, body, _ = aws.client.create(_pod("team-clinical", "aws-euc1"))
    assert status == 403, (status, body)
    message = body.get("message", "")
    assert "gpufleet-data-residency" in message and "regulated" in message and "aws-euc1" in message, message
    # Pinned to the allowed site does not help either: the data may not be here at all.
    status, body, _ = aws.client.create(_pod("team-clinical", "dc-fra"))
    assert status == 403 and "may not be processed at site aws-euc1" in body.get("message", ""), body.get("message")
    general = _pod("team-research", "aws-euc1")
    status, body, warnings = aws.client.create(general)
    try:
        assert status == 201, (status, body.get("message"))
        assert not warnings, warnings
    finally:
        aws.client.delete("v1", "Pod", general["metadata"]["name"], "team-research")
