"""Start fakepve (the third-party Proxmox VE API emulator) for the proxmox connector's tests.

    python fakepve_launcher.py GUESTS.json DIR [TIME_SCALE]

Serves https://127.0.0.1:<free port> with a self-signed certificate written to DIR/fakepve.crt
(the CA a client verifies it with), time scale TIME_SCALE (default 0: tasks finish at once), login root@pam / secret,
and an API token root@pam!engine made through fakepve's Python API (the only way it has). Prints
one JSON line on stdout: {"url", "ca_file", "token_id", "token_secret"}. Then reads commands, one
JSON object a line, on stdin, and answers each with one JSON line:
    {"fail": {"method", "suffix", "status", "message", "times"}}  fakepve's fault injection
    {"vm": VMID}                                   the VM's node, status and config, or null
    {"count_named": NAME}                          how many VMs carry this name
    {"guest_agents": true}                         from now on every VM whose config has `agent: 1`
                                                   answers guest agent calls (fakepve's vm.agent = {},
                                                   its default answers: eth0 192.0.2.10), as a guest
                                                   image with qemu-guest-agent installed would
Exits when stdin closes (the test process ended).
"""

import asyncio
import json
import secrets
import sys
import threading

from fakepve import FakePve
from fakepve.certs import make_cert


def add_guests(pve, guests):
    for guest in guests:
        vm = pve.add_vm(guest['vmid'], guest['name'], node=guest.get('node', 'pve1'),
                        status=guest.get('status', 'stopped'), config=guest.get('config', {}),
                        template=guest.get('template', False))
        if 'agent' in guest:
            vm.agent = guest['agent']


def command(pve, cmd):
    if 'fail' in cmd:
        f = cmd['fail']
        pve.fail(f['method'], f['suffix'], status=f.get('status'), message=f.get('message'),
                 error=f.get('error'), times=f.get('times'))
        return {'ok': True}
    if 'vm' in cmd:
        vm = pve.vm(int(cmd['vm']))
        return None if vm is None else {'node': vm.node, 'status': vm.status, 'config': vm.config}
    if 'ceph_slow' in cmd:
        pve.ceph_slow(float(cmd['ceph_slow']))
        return {'ok': True}
    if 'guest_agents' in cmd:
        pve.guest_agents = bool(cmd['guest_agents'])
        return {'ok': True}
    if 'count_named' in cmd:
        return sum(1 for vm in pve.vms if vm.name == cmd['count_named'])
    return {'error': 'unknown command'}


async def main(guests_file, directory, time_scale=0.0):
    with open(guests_file) as fh:
        spec = json.load(fh)
    pve = FakePve(user='root@pam', password='secret', host='127.0.0.1', port=0)
    pve.time_scale = time_scale
    for node in spec.get('nodes', []):
        pve.add_node(node)
    for name in spec.get('ceph_storages', []):
        pve.add_ceph_storage(name)
    add_guests(pve, spec.get('guests', []))
    token_id, token_secret = 'root@pam!engine', secrets.token_hex(16)
    pve.apitokens[token_id] = token_secret
    certfile, keyfile, _ = make_cert(directory, hosts=('127.0.0.1',))
    await pve.start(certfile, keyfile)
    print(json.dumps({'url': pve.url, 'ca_file': certfile, 'token_id': token_id,
                      'token_secret': token_secret}), flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    lines = asyncio.Queue()

    def reader():
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=reader, daemon=True).start()

    async def agents():
        while True:
            if getattr(pve, 'guest_agents', False):
                for vm in pve.vms:
                    if vm.agent is None and str(vm.config.get('agent', '0')).split(',')[0] in ('1', 'enabled=1'):
                        vm.agent = {}
            await asyncio.sleep(0.05)

    agent_task = asyncio.ensure_future(agents())
    while True:
        get = asyncio.ensure_future(lines.get())
        finished = asyncio.ensure_future(done.wait())
        await asyncio.wait([get, finished], return_when=asyncio.FIRST_COMPLETED)
        if get.done():
            finished.cancel()
            try:
                answer = command(pve, json.loads(get.result()))
            except Exception as e:  # noqa: BLE001 - the test reads the error
                answer = {'error': str(e)}
            print(json.dumps(answer), flush=True)
            continue
        get.cancel()
        break
    agent_task.cancel()
    await pve.stop()


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
