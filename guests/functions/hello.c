// The starter function: greets `?name=...` (default: world) as text/plain.
#include <stdio.h>

#include "cgi.h"

int main(void) {
    char name[64] = "world";
    query_param("name", name, sizeof name);
    printf("Content-Type: text/plain; charset=utf-8\n\nHello, %s!\n", name);
    return 0;
}
