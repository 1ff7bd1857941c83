/* nmc console: live updates (server-sent events), the console's one script, served from the package.
 *
 * An element with data-stream names its stream (/api/jobs/<id>/stream, /api/events/stream).
 * The server sends HTML it rendered and escaped itself (Jinja2 autoescape): this script only
 * puts those fragments in place, and never builds markup from data. Without JavaScript the
 * pages work as they are; a reload shows what is new.
 */
"use strict";

(function () {
  if (!window.EventSource) {
    return;
  }

  /* The Job page: each `results` event is the job's live part again; `end` when the job is complete. */
  function followJob(section) {
    var source = new EventSource(section.dataset.stream);
    section.dataset.live = "open";
    source.addEventListener("results", function (message) {
      section.innerHTML = message.data;
    });
    source.addEventListener("end", function (message) {
      source.close();
      section.dataset.live = message.data === "complete" ? "complete" : "stopped";
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        section.dataset.live = "stopped";
      }
    };
  }

  /* The Events page: each `event` is one table row, put on top (the table is newest first). */
  function followEvents(table) {
    var body = table.tBodies[0];
    var source = new EventSource(table.dataset.stream);
    table.dataset.live = "open";
    source.addEventListener("event", function (message) {
      var empty = body.querySelector("tr.empty");
      if (empty) {
        empty.remove();
      }
      body.insertAdjacentHTML("afterbegin", message.data);
      if (body.firstElementChild) {
        body.firstElementChild.classList.add("live-new");
      }
    });
    source.addEventListener("end", function () {
      source.close();
      table.dataset.live = "stopped";
    });
  }

  var job = document.getElementById("job-live");
  if (job && job.dataset.stream) {
    followJob(job);
  }
  var events = document.getElementById("events-live");
  if (events && events.dataset.stream) {
    followEvents(events);
  }
})();
