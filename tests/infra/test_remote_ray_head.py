"""servers.ray_address naming another head: `up` starts no local Ray head, `status` reports the configured one."""
import socket

from alignline.config import load_config
from alignline.infra.servers import remote_ray_head, servers, status


def test_a_remote_ray_head_is_not_started_and_status_shows_it(tmp_path):
    with socket.socket() as listener:  # stands in for the remote head's GCS port
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        cfg = load_config(home=tmp_path, overrides=[f"servers.ray_address={address!r}"])
        assert remote_ray_head(cfg) == address
        assert "ray" not in {srv.name for srv in servers(cfg)}  # what `up` starts and `down` stops
        (ray,) = [s for s in status(cfg) if s.name == "ray"]
        assert ray.url == f"{address} (remote)" and ray.healthy and ray.pid is None
    (ray,) = [s for s in status(cfg) if s.name == "ray"]
    assert not ray.healthy  # nothing answers there any more


def test_this_data_dirs_own_head_is_still_started(tmp_path):
    own = load_config(home=tmp_path, overrides=["servers.ray_address='127.0.0.1:17379'", "servers.ray_port=17379"])
    default = load_config(home=tmp_path)
    for cfg in (own, default):
        assert remote_ray_head(cfg) is None
        assert "ray" in {srv.name for srv in servers(cfg)}
        (ray,) = [s for s in status(cfg) if s.name == "ray"]
        assert ray.pid is None and not ray.healthy and "remote" not in ray.url
