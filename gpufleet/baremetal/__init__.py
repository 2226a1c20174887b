"""Data-centre GPU servers: preflight checks over SSH, playbook runs through
ansible-runner, and the ``gpufleet baremetal`` commands."""
