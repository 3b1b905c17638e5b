"""Stand-in for an ICON node in the lab: answers on the P2P and JSON-RPC ports with its role.

Runs under the node's /usr/bin/python3, started by the prep-ha-lab `service` OCF agent.
"""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1]
P2P_PORT, RPC_PORT = 7100, 9000


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"role": ROLE, "node": socket.gethostname()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def p2p():
    srv = socket.create_server(("0.0.0.0", P2P_PORT), reuse_port=False)
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(f"{ROLE}\n".encode())


ThreadingHTTPServer.allow_reuse_address = True
rpc = ThreadingHTTPServer(("0.0.0.0", RPC_PORT), Handler)
threading.Thread(target=p2p, daemon=True).start()
rpc.serve_forever()
