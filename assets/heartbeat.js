/* Is the server there? The page asks GET /api/health every second (1.5 s timeout). Dash
   callbacks that cannot reach the server only fail in the console, so without this the
   page would keep its last "live" status forever. After UNREACHABLE_MS without an answer
   the body gets the class "server-down" (the CSS dims the charts, greys the live dot and
   shows a red banner saying "server unreachable"); the first answer after that removes it. */
(function () {
    var PERIOD_MS = 1000;
    var TIMEOUT_MS = 1500;
    var UNREACHABLE_MS = 2500;
    var lastOk = Date.now();

    function banner() {
        var el = document.getElementById('server-banner');
        if (!el && document.body) {
            el = document.createElement('div');
            el.id = 'server-banner';
            el.className = 'server-banner';
            el.setAttribute('role', 'alert');
            el.textContent = 'server unreachable - retrying every second; the charts show the last data received';
            document.body.appendChild(el);
        }
        return el;
    }

    function show(down) {
        if (!document.body) { return; }
        banner();
        document.body.classList.toggle('server-down', down);
    }

    function beat() {
        var controller = window.AbortController ? new AbortController() : null;
        var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
        fetch('/api/health', {cache: 'no-store', signal: controller ? controller.signal : undefined})
            .then(function () { lastOk = Date.now(); })  /* any answer: the server is there */
            .catch(function () { /* unreachable: judged below */ })
            .then(function () {
                if (timer) { clearTimeout(timer); }
                show(Date.now() - lastOk > UNREACHABLE_MS);
            });
    }

    setInterval(beat, PERIOD_MS);
})();
