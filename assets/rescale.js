/* The candle chart's price and volume axes fit the bars in view on every zoom and pan.
   Plotly keeps a y range fixed while x changes, so zooming in time left the candles a
   thin strip. After each relayout that moved the x-axis, the price axis (yaxis: low..high
   of the closed and in-progress candles inside the x-range, plus a 5 % margin) and the
   volume axis (yaxis2: 0..largest volume inside) are set; a reset of x (double click)
   gives both back to autorange. Traces by position: see dashboard/candles.py TRACE_*. */
(function () {
    var CANDLES = [0, 1, 7, 8];  // closed, in progress, vendor candles, history (dashboard/history.py)
    var VOLUMES = [2, 3, 9];
    var MARGIN = 0.05;

    function xKeys(ev) {
        for (var k in ev) {
            if (k.indexOf('xaxis') === 0) { return true; }
        }
        return false;
    }

    function fit(gd) {
        var xa = gd._fullLayout && gd._fullLayout.xaxis;
        if (!xa || !xa.range || !gd.data) { return null; }
        var lo = xa.r2l(xa.range[0]), hi = xa.r2l(xa.range[1]);
        if (lo > hi) { var t = lo; lo = hi; hi = t; }
        var pLo = Infinity, pHi = -Infinity, vHi = 0;
        CANDLES.forEach(function (i) {
            var tr = gd.data[i];
            if (!tr || !tr.x) { return; }
            for (var j = 0; j < tr.x.length; j++) {
                var x = xa.d2l(tr.x[j]);
                if (x < lo || x > hi) { continue; }
                if (tr.low[j] < pLo) { pLo = tr.low[j]; }
                if (tr.high[j] > pHi) { pHi = tr.high[j]; }
            }
        });
        VOLUMES.forEach(function (i) {
            var tr = gd.data[i];
            if (!tr || !tr.x) { return; }
            for (var j = 0; j < tr.x.length; j++) {
                var x = xa.d2l(tr.x[j]);
                if (x >= lo && x <= hi && tr.y[j] > vHi) { vHi = tr.y[j]; }
            }
        });
        if (!isFinite(pLo) || !isFinite(pHi)) { return null; }
        var pad = (pHi - pLo) * MARGIN || Math.abs(pHi) * 0.0005 || 1;
        var out = {'yaxis.range': [pLo - pad, pHi + pad]};
        if (vHi > 0) { out['yaxis2.range'] = [0, vHi * (1 + MARGIN)]; }
        return out;
    }

    function attach(gd) {
        if (gd.__tsRescale) { return; }
        gd.__tsRescale = true;
        gd.on('plotly_relayout', function (ev) {
            if (!ev || !xKeys(ev)) { return; }  // our own y update fires this too
            var update = ev['xaxis.autorange'] ? {'yaxis.autorange': true, 'yaxis2.autorange': true} : fit(gd);
            if (update) { window.Plotly.relayout(gd, update); }
        });
    }

    // dcc.Graph replaces its plot div on some redraws: look for an unhooked one each second.
    setInterval(function () {
        var gd = document.querySelector('#candles .js-plotly-plot');
        if (gd && gd.on) { attach(gd); }
    }, 500);
})();
