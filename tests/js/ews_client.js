// A second EWS client for the test suite: ews-javascript-api (npm), driven from pytest.
//
// Reads one JSON request on stdin and writes one JSON answer on stdout:
//   {"operation": "availability", "url", "username", "password", "attendees": [...],
//    "start", "end" (ISO instants), "interval", "view", "suggestions": bool}
//     -> {"attendees": [{"result", "errorCode", "viewType", "merged",
//                        "events": [{"start", "end", "busyType", "subject"}]}],
//         "suggestions": {"result", "errorCode"} | null}
//   {"operation": "autodiscover", "url", "username", "password", "email"}
//     -> {"errorCode", "settings": {name: value}}
// Times go out as UTC ISO strings; run with TZ=UTC so the library's local zone is UTC too.
// Failures print {"error": message} and exit 1. Only the URLs given are ever contacted.
"use strict";

const fs = require("fs");
const ews = require("ews-javascript-api");

function iso(dateTime) {
  return dateTime.MomentDate.toISOString();
}

function enumName(enumeration, value) {
  return enumeration[value];
}

async function availability(req) {
  const service = new ews.ExchangeService(ews.ExchangeVersion.Exchange2013);
  service.Credentials = new ews.WebCredentials(req.username, req.password);
  service.Url = new ews.Uri(req.url);
  const attendees = req.attendees.map((address) => new ews.AttendeeInfo(address));
  const window = new ews.TimeWindow(ews.DateTime.Parse(req.start), ews.DateTime.Parse(req.end));
  const options = new ews.AvailabilityOptions();
  options.MergedFreeBusyInterval = req.interval;
  options.RequestedFreeBusyView = ews.FreeBusyViewType[req.view];
  const data = req.suggestions
    ? ews.AvailabilityData.FreeBusyAndSuggestions
    : ews.AvailabilityData.FreeBusy;
  const results = await service.GetUserAvailability(attendees, window, data, options);
  const answers = results.AttendeesAvailability.Responses.map((a) => ({
    result: enumName(ews.ServiceResult, a.Result),
    errorCode: enumName(ews.ServiceError, a.ErrorCode),
    viewType: enumName(ews.FreeBusyViewType, a.ViewType),
    merged: a.MergedFreeBusyStatus && a.MergedFreeBusyStatus.length
      ? a.MergedFreeBusyStatus.map((status) => String(status)).join("")
      : null,
    events: (a.CalendarEvents || []).map((e) => ({
      start: iso(e.StartTime),
      end: iso(e.EndTime),
      busyType: enumName(ews.LegacyFreeBusyStatus, e.FreeBusyStatus),
      subject: e.Details ? e.Details.Subject : null,
    })),
  }));
  const suggestions = results.SuggestionsResponse
    ? {
        result: enumName(ews.ServiceResult, results.SuggestionsResponse.Result),
        errorCode: enumName(ews.ServiceError, results.SuggestionsResponse.ErrorCode),
      }
    : null;
  return { attendees: answers, suggestions };
}

async function autodiscover(req) {
  const service = new ews.AutodiscoverService(
    new ews.Uri(req.url), ews.ExchangeVersion.Exchange2013);
  service.Credentials = new ews.WebCredentials(req.username, req.password);
  service.RedirectionUrlValidationCallback = () => false; // never follow a redirect elsewhere
  const names = [ews.UserSettingName.InternalEwsUrl, ews.UserSettingName.ExternalEwsUrl];
  const response = await service.GetUserSettings(req.email, names);
  const settings = {};
  for (const name of names) {
    const key = enumName(ews.UserSettingName, name);
    if (response.Settings && response.Settings.containsKey(name)) {
      settings[key] = response.Settings.get(name);
    }
  }
  return { errorCode: enumName(ews.AutodiscoverErrorCode, response.ErrorCode), settings };
}

async function main() {
  const req = JSON.parse(fs.readFileSync(0, "utf8"));
  const handlers = { availability, autodiscover };
  const handler = handlers[req.operation];
  if (!handler) {
    throw new Error(`unknown operation ${req.operation}`);
  }
  process.stdout.write(JSON.stringify(await handler(req)));
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ error: String(error && (error.stack || error.message || error)) }));
  process.exit(1);
});
