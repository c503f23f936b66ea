// Sets the response status and headers from the query: `?code=201&location=/next`;
// `?raw=1` writes a body with no CGI header block (a malformed response).
#include <stdio.h>

#include "cgi.h"

int main(void) {
    char location[256];
    if (query_number("raw", 0)) {
        printf("no headers here\n");
        return 0;
    }
    unsigned long long code = query_number("code", 200);
    printf("Status: %llu Custom\n", code);
    if (query_param("location", location, sizeof location)) printf("Location: %s\n", location);
    printf("X-Function: status\nContent-Type: text/plain\n\nstatus %llu\n", code);
    return 0;
}
