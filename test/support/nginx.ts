// A real load balancer for the deploy tests: Debian's nginx, started on a free loopback port with a
// generated config (round robin, no sticky sessions, WebSocket upgrades) and stopped by PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const NGINX = '/usr/sbin/nginx';

export function nginxInstalled(): boolean {
  return spawnSync(NGINX, ['-v']).status === 0;
}

/** A port nobody listens on right now (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * The balancer config the README shows. A stopping instance answers 503 to new calls and sockets, and
 * a stopped one refuses connections: both go to the next instance, POSTs included (`non_idempotent`),
 * because an instance answers 503 before it does anything. `max_fails=0` keeps a restarted instance
 * in the rotation at once. `$http_host` keeps the TwiML's URLs pointing at the balancer.
 */
export function balancerConfig(opts: { listen: string; upstreams: string[] }): string {
  return `
upstream relay_actors {
${opts.upstreams.map((u) => `  server ${u} max_fails=0;`).join('\n')}
}
map $http_upgrade $connection_upgrade {
  default upgrade;
  ''      close;
}
server {
  listen ${opts.listen};
  location / {
    proxy_pass http://relay_actors;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout 1h;
    proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    proxy_next_upstream_tries 6;
  }
}`;
}

export class Nginx {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private readonly dir = mkdtempSync(join(tmpdir(), 'relay-nginx-'));
  port = 0;

  constructor(private readonly upstreams: string[]) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const conf = join(this.dir, 'nginx.conf');
    writeFileSync(
      conf,
      `user root;
worker_processes 1;
daemon off;
pid ${join(this.dir, 'nginx.pid')};
error_log ${join(this.dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(this.dir, 'body')};
  proxy_temp_path ${join(this.dir, 'proxy')};
  fastcgi_temp_path ${join(this.dir, 'fastcgi')};
  uwsgi_temp_path ${join(this.dir, 'uwsgi')};
  scgi_temp_path ${join(this.dir, 'scgi')};
${balancerConfig({ listen: `127.0.0.1:${this.port}`, upstreams: this.upstreams })}
}
`,
    );
    const child = spawn(NGINX, ['-p', this.dir, '-c', conf, '-e', join(this.dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // Ready once it answers (a 502 from an upstream still means nginx itself is up).
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`nginx exited at start: ${stderr}`);
      const up = await fetch(`${this.url}/healthz`).then(
        () => true,
        () => false,
      );
      if (up) return;
      if (Date.now() > deadline) throw new Error(`nginx did not answer on ${this.url}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** What nginx logged (warnings and errors), e.g. resets from an upstream. */
  errorLog(): string {
    try {
      return readFileSync(join(this.dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null) {
      this.child.kill('SIGTERM');
      await this.exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
