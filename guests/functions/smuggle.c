// A hostile function: an interim status (`?code=100`, the default, or `?code=101`) and,
// as its "body", a whole HTTP response of its own with a cookie for the entire origin.
// Forwarded as it is, a client (or a proxy pooling the connection) takes that body as
// the final response to this request or to the next one on the connection.
#include <stdio.h>

#include "cgi.h"

int main(void) {
    unsigned long long code = query_number("code", 100);
    printf("Status: %llu Continue\r\n\r\n", code);
    printf("HTTP/1.1 200 OK\r\nSet-Cookie: session=stolen; Path=/\r\n"
           "Content-Type: text/html\r\nContent-Length: 6\r\n\r\nPWNED!");
    return 0;
}
