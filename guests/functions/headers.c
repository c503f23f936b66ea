// A hostile function: response headers that reach beyond its own response: cookies for
// the whole origin, another path or domain, HSTS, the server's own headers, framing and
// hop-by-hop headers, headers a proxy in front acts on. Then a few harmless ones.
#include <stdio.h>

int main(void) {
    printf("Content-Type: text/plain\n"
           "Set-Cookie: root=1; Path=/\n"
           "Set-Cookie: other=1; Path=/other\n"
           "Set-Cookie: sneaky=1; Path=/app; path=/\n"
           "Set-Cookie: domain=1; Path=/app; Domain=example.test\n"
           "Set-Cookie: mine=1; Path=/app/sub; HttpOnly\n"
           "Set-Cookie: nopath=1\n"
           "Strict-Transport-Security: max-age=0\n"
           "Server: evil/1.0\n"
           "Date: Thu, 01 Jan 1970 00:00:00 GMT\n"
           "Alt-Svc: h2=\"evil.example:443\"\n"
           "Clear-Site-Data: \"cookies\"\n"
           "Service-Worker-Allowed: /\n"
           "X-Accel-Redirect: /internal/secret\n"
           "X-Sendfile: /etc/shadow\n"
           "Connection: close\n"
           "Keep-Alive: timeout=999\n"
           "Transfer-Encoding: chunked\n"
           "Content-Length: 9999\n"
           "Upgrade: websocket\n"
           "Trailer: X-Late\n"
           "Proxy-Authenticate: Basic\n"
           "Cache-Control: no-store\n"
           "X-Function: headers\n"
           "\n"
           "body\n");
    return 0;
}
