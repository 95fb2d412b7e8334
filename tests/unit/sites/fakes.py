"""A stand-in for the site's learner with every member of ``sites.interfaces.Learner`` (mode "off":
nothing accounted, no secure-sum noise), counting what it serves."""

from __future__ import annotations

import torch

from secgan.net.schema import GradientReply
from secgan.privacy.policy import PrivacyPolicy


class FakeLearner:
    policy = PrivacyPolicy(mode="off", allow_off=True)

    def __init__(self) -> None:
        self.served: list[tuple[int, int]] = []

    @property
    def releases(self) -> int:
        return len(self.served)

    def serve(self, msg, *, distributed_noise: bool = False):
        self.served.append((msg.round, msg.step))
        return GradientReply(run_id=msg.run_id, round=msg.round, step=msg.step, grad=torch.zeros_like(msg.fake))

    def epsilon(self):
        return None

    def save(self) -> None:
        pass

    def refuses_source(self, name: str):
        return None

    def plan(self, run_steps: int):
        return None

    def secure_sum_noise(self, *, threshold: int):
        return 0.0, None

    def record_distributed_noise(self, *, threshold: int, participants: int, first_attempt: bool):
        return None


class FakeSocket:
    """Stands in for the node's DEALER: records every message the node sends, decoded."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_multipart(self, frames, flags=0, copy=True):
        from secgan.net import codec

        self.sent.append(codec.decode(frames)[1])


def fake_node(tmp_path, learner, *, size: int = 16, secure_sum=None, policy=None, **settings):
    """A SiteNode on a fake socket (no network): site-1, loopback endpoint, no keys, the learner's
    policy (``procedural``); ``settings`` changes other keys of its SiteConfig."""
    from secgan.core.spec import ImageSpec
    from secgan.settings import SiteConfig
    from sites.config import NodeConfig
    from sites.node import SiteNode

    site = SiteConfig(site_id="site-1", data_dir=str(tmp_path), coordinator_endpoint="tcp://127.0.0.1:9",
                      state_dir=str(tmp_path), image=ImageSpec(size=size), policy=policy or learner.policy, **settings)
    node = SiteNode(NodeConfig(settings=site, client_public=b"", client_secret=b"", server_public=b""), learner,
                    secure_sum=secure_sum)
    node.sock = FakeSocket()
    return node
