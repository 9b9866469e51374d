/**
 * Throwaway X.509 material for TLS tests, made with the `openssl` command (argv, no shell):
 * certificate authorities, a server certificate for 127.0.0.1/localhost and client
 * certificates, each written as PEM files in a private temporary folder.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM files of one certificate and its key. */
export interface CertFiles {
  cert: string;
  key: string;
}

/** A folder of test certificates; `destroy()` removes it. */
export class TestPki {
  private constructor(readonly dir: string) {}

  static create(): TestPki {
    return new TestPki(mkdtempSync(join(tmpdir(), 'fos1-pki-')));
  }

  /** A self-signed CA named `name`. */
  ca(name: string): CertFiles {
    const files = this.files(name);
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.key, '-out', files.cert, '-days', '2', '-subj', `/CN=${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    return files;
  }

  /**
   * A leaf certificate `name` signed by `ca`. `server` adds the 127.0.0.1/localhost names;
   * every leaf may act as TLS client (the server's own internode certificate is both).
   */
  leaf(name: string, ca: CertFiles, options: { server?: boolean } = {}): CertFiles {
    const files = this.files(name);
    const csr = join(this.dir, `${name}.csr`);
    const ext = join(this.dir, `${name}.ext`);
    writeFileSync(
      ext,
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature,keyEncipherment',
        `extendedKeyUsage=${options.server ? 'serverAuth,clientAuth' : 'clientAuth'}`,
        ...(options.server ? ['subjectAltName=IP:127.0.0.1,DNS:localhost'] : []),
        '',
      ].join('\n'),
    );
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.key, '-out', csr, '-subj', `/CN=${name}/O=fos1-test`]);
    openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', files.cert, '-days', '2', '-extfile', ext]);
    return files;
  }

  destroy(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private files(name: string): CertFiles {
    return { cert: join(this.dir, `${name}.pem`), key: join(this.dir, `${name}-key.pem`) };
  }
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
