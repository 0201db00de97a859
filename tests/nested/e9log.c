/* e9log: copies stdin to Bochs' port 0xE9, whose bytes reach the host's stdout at once (more
 * reliably than the emulated UART under load). Runs as root inside the nested host. */
#include <stdio.h>
#include <sys/io.h>

int main(void)
{
    if (ioperm(0xe9, 1, 1) != 0) {
        perror("e9log: ioperm");
        return 1;
    }
    int c;
    while ((c = getchar()) != EOF)
        outb((unsigned char)c, 0xe9);
    return 0;
}
